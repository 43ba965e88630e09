"""Build targets of native/: one table, no if/elif chain.

A target says how llama.cpp is configured (stage 1, cached per pin+flags) and how our
native/ project is configured against it (stage 2, cached per checkout). Targets that
share the same stage-1 flags (host and host-asan) share one llama.cpp build.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

from .. import pins
from ..cpu_variant import arch_table, host_features, variant_runs

# Upstream tools built from the same tree and copied into <prefix>/bin. llama-cli needs
# the server stack in this tree (LLAMA_BUILD_SERVER), so llama-completion is the CLI.
UPSTREAM_TOOLS = (
    "llama-bench",
    "llama-quantize",
    "llama-perplexity",
    "llama-imatrix",
    "llama-simple",
    "llama-completion",
)

# Flags common to every llama.cpp build: static libs with PIC (they end up inside our
# shared library), no tests/server/app, no OpenSSL (static aarch64 executables).
COMMON_LLAMA_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_EXAMPLES=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_SUBPROCESS=OFF",
    "-DGGML_CCACHE=OFF",
)

AARCH64_TOOLCHAIN = "cmake/toolchains/aarch64-linux-gnu.cmake"


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    llama_args: tuple[str, ...]          # stage 1 (llama.cpp) cmake args
    native_args: tuple[str, ...] = ()    # stage 2 (our native/) cmake args
    toolchain: str | None = None         # repo-relative CMake toolchain file
    variant: str | None = None           # CPU variant name reported in profiles
    runs_on_host: bool = True            # can ctest/fe-bench run here without an emulator
    emulator: tuple[str, ...] = ()       # CMAKE_CROSSCOMPILING_EMULATOR (for ctest)
    env: dict = field(default_factory=dict)

    @property
    def llama_key_args(self) -> tuple[str, ...]:
        return COMMON_LLAMA_ARGS + self.llama_args


_STATIC_EXE = ("-DCMAKE_EXE_LINKER_FLAGS=-static",)


def _aarch64(name: str, arch: str, desc: str) -> Target:
    return Target(
        name=name,
        description=desc,
        llama_args=("-DGGML_NATIVE=OFF", f"-DGGML_CPU_ARM_ARCH={arch}") + _STATIC_EXE,
        native_args=("-DFE_STATIC_EXE=ON",),
        toolchain=AARCH64_TOOLCHAIN,
        variant=arch,
        runs_on_host=platform.machine() in ("aarch64", "arm64"),
        emulator=("qemu-aarch64",),
    )


def _variant_of(target: str) -> str:
    """The CPU variant a target builds, from the one table (native/variants.json)."""
    for arch in ("x86_64", "aarch64"):
        for v in arch_table(arch).variants:
            if v.target == target:
                return v.name
    raise KeyError(f"target {target} is not in native/variants.json")


# x86-64 host targets that are CPU variants of the Python binding's library, best first
# (the order of native/variants.json); `finllm-edge native build` builds them all and
# copies each libfinllm_edge.so into finllm_edge/_lib/<variant>/.
HOST_VARIANT_TARGETS: tuple[str, ...] = tuple(v.target for v in arch_table("x86_64").variants)


def _host_runs(target: str) -> bool:
    """Whether this machine can execute a host variant's binaries (ctest, fe-bench)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    v = arch_table("x86_64").variant(target)
    return variant_runs(host_features("x86_64"), v)

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            name="host",
            description="x86-64 host baseline: AVX2/FMA/F16C, AMX off (finllm_edge.pins.X86_SAFE_CMAKE_ARGS)",
            llama_args=tuple(pins.X86_SAFE_CMAKE_ARGS),
            variant=_variant_of("host"),
        ),
        Target(
            name="host-avx512",
            description="x86-64 host with AVX-512 F/CD/BW/DQ/VL + VNNI, AMX off (pins.X86_AVX512_CMAKE_ARGS)",
            llama_args=tuple(pins.X86_AVX512_CMAKE_ARGS),
            variant=_variant_of("host-avx512"),
            runs_on_host=_host_runs("host-avx512"),
        ),
        Target(
            name="host-asan",
            description="host with ASan+UBSan on finllm-edge code and tests (llama.cpp libs unsanitized)",
            llama_args=tuple(pins.X86_SAFE_CMAKE_ARGS),
            variant=_variant_of("host"),
            native_args=("-DFE_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"),
            env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1",
                 "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"},
        ),
        _aarch64("linux-aarch64-dotprod", _variant_of("linux-aarch64-dotprod"),
                 "aarch64 Linux, Cortex-A77/A55 class (Snapdragon 865), static executables"),
        _aarch64("linux-aarch64-armv8", _variant_of("linux-aarch64-armv8"),
                 "aarch64 Linux baseline ARMv8.0, static executables (no SIGILL on old cores)"),
    )
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        from ..errors import NativeBuildError

        raise NativeBuildError(
            f"unknown native target {name!r}; known targets: {', '.join(TARGETS)}"
        ) from None
