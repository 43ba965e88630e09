"""linux-aarch64 artifacts: both CPU variants, the run-time launcher, the parity probe, the bundle.

What gets built (all static executables, so qemu-aarch64 and phones run them as they are):

- per variant (targets ``linux-aarch64-dotprod`` / ``linux-aarch64-armv8`` of
  finllm_edge/native/targets.py): llama.cpp + our native/ project (``fe-bench``, C tests),
  by ``finllm_edge.native.build.ensure_built``;
- ``fe-dispatch`` (native/dispatch/): the launcher that picks a variant from AT_HWCAP;
- ``fe-logits`` (native/validate/): prompt logits + greedy tokens straight from llama.h, for
  the cross-build parity check; built for each aarch64 variant and for the host.

The bundle the adb helper pushes to a phone (``aarch64_bundle()``):

    <cache>/dist/linux-aarch64/
        bin/fe-bench                              launcher (fe-dispatch under the tool's name)
        bin/fe-bench-armv8.2-a+dotprod+fp16
        bin/fe-bench-armv8-a
        bin/fe-logits, bin/fe-logits-<variant>    same scheme for the parity probe
        manifest.json                             variants, targets, sha256 of every file

Push ``bin/`` anywhere (e.g. /data/local/tmp/finllm-edge/) and run ``bin/fe-bench ARGS``:
the launcher execs the best variant next to it and says which and why on stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from finllm_edge.cpu_variant import VARIANT_BASE, VARIANT_DOTPROD, VARIANTS
from finllm_edge.errors import NativeBuildError
from finllm_edge.fileio import atomic_path, commit_dir
from finllm_edge.hashing import sha256_file as _sha256
from finllm_edge.paths import cache_dir, repo_root

# variant -> native build target (finllm_edge/native/targets.py)
AARCH64_TARGETS: dict[str, str] = {
    VARIANT_DOTPROD: "linux-aarch64-dotprod",
    VARIANT_BASE: "linux-aarch64-armv8",
}
TOOLCHAIN = "cmake/toolchains/aarch64-linux-gnu.cmake"
BUNDLE_TOOLS = ("fe-bench", "fe-logits")
OBJDUMP = "aarch64-linux-gnu-objdump"
BUNDLE_FORMAT = 1
# operands of half-precision arithmetic: vector .4h/.8h lanes or scalar h registers
_FP16_OPERAND = re.compile(r"\bv\d+\.(?:4h|8h)\b|\bv\d+\.h\[|(?:^|[\s,])h\d+\b")


def _log(msg: str) -> None:
    import sys

    print(f"[aarch64] {msg}", file=sys.stderr, flush=True)


def _checkout_key() -> str:
    return hashlib.sha256(str(repo_root().resolve()).encode()).hexdigest()[:10]


def _stamp(prefix: Path) -> dict:
    try:
        return json.loads((prefix / "finllm-edge-stamp.json").read_text())
    except (OSError, ValueError):
        return {}


def _uses_openmp(prefix: Path) -> bool:
    """Whether the llama.cpp prefix's CPU backend calls into OpenMP (then we must link it too)."""
    lib = prefix / "lib" / "libggml-cpu.a"
    try:
        return b"GOMP_" in lib.read_bytes()
    except OSError:
        return bool(_stamp(prefix).get("openmp"))


def _cmake_project(src: Path, build: Path, args: list[str]) -> None:
    """Configure (once per arg set) and build a small standalone CMake project, under the heavy lock."""
    from finllm_edge.native.build import _tool, heavy_lock

    cmake, ninja = _tool("cmake", "cmake"), _tool("ninja", "ninja")
    build.mkdir(parents=True, exist_ok=True)
    key = json.dumps(args)
    keyfile = build / "fe-configure-args.json"
    if (build / "build.ninja").exists() and keyfile.exists() and keyfile.read_text() == key:
        # Up to date? A dry run compiles nothing, so it needs no place in the heavy-lock queue.
        dry = subprocess.run([ninja, "-C", str(build), "-n"], capture_output=True, text=True)
        if dry.returncode == 0 and "no work to do" in dry.stdout:
            return
    with heavy_lock():
        if not (build / "build.ninja").exists() or not keyfile.exists() or keyfile.read_text() != key:
            cmd = [cmake, "-S", str(src), "-B", str(build), "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}",
                   "-DCMAKE_BUILD_TYPE=Release", *args]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise NativeBuildError(f"configure failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
            keyfile.write_text(key)
        proc = subprocess.run([cmake, "--build", str(build), "-j", os.environ.get("FINLLM_EDGE_JOBS", "2")],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise NativeBuildError(f"build of {src} failed:\n{proc.stdout[-4000:]}{proc.stderr[-3000:]}")


def build_launcher() -> Path:
    """The static aarch64 fe-dispatch launcher (seconds; incremental)."""
    build = cache_dir() / "native" / f"dispatch-aarch64-{_checkout_key()}"
    _cmake_project(repo_root() / "native" / "dispatch", build,
                   [f"-DCMAKE_TOOLCHAIN_FILE={repo_root() / TOOLCHAIN}"])
    exe = build / "fe-dispatch"
    if not exe.exists():
        raise NativeBuildError(f"build finished but {exe} is missing")
    return exe


def build_probe(target: str) -> Path:
    """fe-logits for a native target (host or linux-aarch64-*), linked to that target's llama.cpp.

    It needs only stage 1 (the llama.cpp prefix), not our C API.
    """
    from finllm_edge.native.build import build_llama
    from finllm_edge.native.targets import get_target

    tgt = get_target(target)
    prefix = Path(build_llama(tgt))
    args = [
        f"-DFE_LLAMA_PREFIX={prefix}",
        f"-DFE_LLAMA_OPENMP={'ON' if _uses_openmp(prefix) else 'OFF'}",
        f"-DFE_VARIANT={tgt.variant or ''}",
    ]
    if tgt.toolchain:
        args += [f"-DCMAKE_TOOLCHAIN_FILE={repo_root() / tgt.toolchain}", "-DFE_STATIC_EXE=ON"]
    build = cache_dir() / "native" / f"validate-{target}-{_checkout_key()}"
    _cmake_project(repo_root() / "native" / "validate", build, args)
    exe = build / "fe-logits"
    if not exe.exists():
        raise NativeBuildError(f"build finished but {exe} is missing")
    return exe


@dataclass
class VariantBuild:
    variant: str
    target: str
    fe_bench: Path
    fe_logits: Path
    llama_prefix: Path
    build_dir: Path
    ctest_dir: Path
    llama_build_seconds: float | None


def build_variant(variant: str) -> VariantBuild:
    """Build (once; cached) everything of one aarch64 variant and say where it is."""
    from finllm_edge.native.build import ensure_built

    target = AARCH64_TARGETS[variant]
    info = ensure_built(target)
    probe = build_probe(target)
    return VariantBuild(
        variant=variant,
        target=target,
        fe_bench=Path(info.fe_bench),
        fe_logits=probe,
        llama_prefix=Path(info.llama_prefix),
        build_dir=Path(info.build_dir),
        ctest_dir=Path(info.ctest_dir),
        llama_build_seconds=_stamp(Path(info.llama_prefix)).get("build_seconds"),
    )


def build_ctest(variant: str, test_model: Path, cpu: str, llama_prefix: Path | None = None) -> Path:
    """Our native/ project (C API + C tests) for an aarch64 variant, configured for ctest under qemu.

    A build dir of its own (next to the one ensure_built uses), so the C tests can get a model
    small enough for emulation (FE_TEST_MODEL) and the emulator a CPU model
    (CMAKE_CROSSCOMPILING_EMULATOR = qemu-aarch64 -cpu CPU), without touching the regular
    build. Returns the directory to run ctest in.
    """
    from finllm_edge import __version__
    from finllm_edge.native import fetch
    from finllm_edge.native.build import build_llama
    from finllm_edge.native.targets import get_target

    target = AARCH64_TARGETS[variant]
    tgt = get_target(target)
    prefix = Path(llama_prefix) if llama_prefix else Path(build_llama(tgt))
    qemu = shutil.which("qemu-aarch64")
    if not qemu:
        raise NativeBuildError("qemu-aarch64 not found; install qemu-user (scripts/bootstrap.sh does)")
    args = [
        f"-DFE_LLAMA_PREFIX={prefix}",
        f"-DFE_LLAMA_OPENMP={'ON' if _uses_openmp(prefix) else 'OFF'}",
        f"-DFE_LLAMA_VERSION={fetch.llama_version_string()}",
        f"-DFE_VERSION={__version__}",
        f"-DFE_VARIANT={tgt.variant or ''}",
        f"-DFE_TEST_MODEL={test_model}",
        *tgt.native_args,
        f"-DCMAKE_TOOLCHAIN_FILE={repo_root() / tgt.toolchain}",
        f"-DCMAKE_CROSSCOMPILING_EMULATOR={qemu};-cpu;{cpu}",
    ]
    build = cache_dir() / "native" / f"ctest-{target}-{_checkout_key()}"
    _cmake_project(repo_root(), build, args)
    return build


def bundle_dir() -> Path:
    return cache_dir() / "dist" / "linux-aarch64"


def _bundle_paths(root: Path) -> dict:
    b = root / "bin"
    return {
        "root": root,
        "bin": b,
        "manifest": root / "manifest.json",
        "launchers": {t: b / t for t in BUNDLE_TOOLS},
        "variants": {v: {t: b / f"{t}-{v}" for t in BUNDLE_TOOLS} for v in VARIANTS},
    }


def aarch64_bundle(build: bool = True) -> dict:
    """The linux-aarch64 bundle for phones and qemu, built and assembled if needed.

    Returns ``{"root": Path, "bin": Path, "manifest": Path,
    "launchers": {"fe-bench": Path, "fe-logits": Path},
    "variants": {"armv8.2-a+dotprod+fp16": {"fe-bench": Path, "fe-logits": Path},
    "armv8-a": {...}}}``, plus ``"builds": {variant: VariantBuild}`` (where each variant
    was built: llama.cpp prefix, native/ build dir) when ``build=True``. Run the launchers;
    the variant binaries are what they exec. With ``build=False`` nothing is compiled: a
    NativeBuildError says what is missing.
    """
    paths = _bundle_paths(bundle_dir())
    if not build:
        missing = [p for p in [paths["manifest"], *paths["launchers"].values(),
                               *(p for v in paths["variants"].values() for p in v.values())] if not p.exists()]
        if missing:
            raise NativeBuildError(
                f"the linux-aarch64 bundle is incomplete ({missing[0]} missing); build it with "
                "`finllm-edge emulate --build-only` (~8 min the first time)")
        return paths

    launcher = build_launcher()
    builds = {v: build_variant(v) for v in VARIANTS}
    sources: dict[str, Path] = {}
    for tool in BUNDLE_TOOLS:
        sources[tool] = launcher
        for v, vb in builds.items():
            sources[f"{tool}-{v}"] = vb.fe_bench if tool == "fe-bench" else vb.fe_logits
    files = {name: _sha256(src) for name, src in sources.items()}

    old = {}
    if paths["manifest"].exists():
        try:
            old = json.loads(paths["manifest"].read_text())
        except ValueError:
            old = {}
    paths["builds"] = builds
    if old.get("files") == files and all((paths["bin"] / n).exists() for n in files):
        return paths

    from finllm_edge.native import fetch

    root = paths["root"]
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "bin").mkdir(parents=True)
    for name, src in sources.items():
        shutil.copy2(src, tmp / "bin" / name)
        os.chmod(tmp / "bin" / name, 0o755)
    manifest = {
        "format": BUNDLE_FORMAT,
        "platform": "linux-aarch64 (static executables; also run on Android arm64 from adb shell)",
        "llama_cpp_version": fetch.llama_version_string(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "launchers": list(BUNDLE_TOOLS),
        "dispatch": "launcher execs <tool>-<variant> next to it: armv8.2-a+dotprod+fp16 when AT_HWCAP "
                    "(or /proc/cpuinfo Features) has asimddp, fphp and asimdhp, else armv8-a; "
                    "env FE_VARIANT_OVERRIDE, FE_DISPATCH_DRY_RUN, FE_DISPATCH_WRAPPER",
        "variants": {v: {"target": b.target, "llama_build_seconds": b.llama_build_seconds,
                         "files": [f"{t}-{v}" for t in BUNDLE_TOOLS]} for v, b in builds.items()},
        "files": files,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    commit_dir(tmp, root)
    _log(f"bundle assembled in {root}")
    return paths


def bundle_json(bundle: dict) -> dict:
    """The aarch64_bundle() dict with paths as strings (for printing / other processes)."""
    def conv(v):
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, VariantBuild):
            return {k: conv(x) for k, x in v.__dict__.items()}
        return v if isinstance(v, (int, float, type(None))) else str(v)
    return conv(bundle)


def host_probe() -> Path:
    """fe-logits for the x86 host build (the parity reference)."""
    return build_probe("host")


def smollm2_q4_0() -> Path:
    """SmolLM2-135M-Instruct requantized to Q4_0 with the host build's llama-quantize (cached).

    The embedded model is Q4_1; Q4_0 is what llama.cpp repacks for dotprod (4x4) at load.
    """
    from finllm_edge.models import default_model_path
    from finllm_edge.native.build import build_llama
    from finllm_edge.native.targets import get_target

    src = default_model_path()
    out_dir = cache_dir() / "models"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / (src.name.replace(".Q4_1.", ".") .removesuffix(".gguf") + ".Q4_0.gguf")
    if out.exists() and out.stat().st_size > 0:
        return out
    quantize = Path(build_llama(get_target("host"))) / "bin" / "llama-quantize"
    with atomic_path(out) as tmp:
        proc = subprocess.run([str(quantize), "--allow-requantize", str(src), str(tmp), "Q4_0", "2"],
                              capture_output=True, text=True)
        if proc.returncode != 0 or not tmp.exists():
            raise NativeBuildError(f"llama-quantize failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return out


def instruction_stats(binary: Path) -> dict[str, int]:
    """Counts of variant-revealing instructions in `aarch64-linux-gnu-objdump -d` of a binary or .a.

    ``sdot``/``udot``: ARMv8.2 dot product (FEAT_DotProd). ``fp16_arith``: half-precision
    arithmetic (FEAT_FP16): an f* instruction, other than the ARMv8.0 conversions fcvt*,
    on .4h/.8h vectors or h registers. The armv8-a variant must have none of them.
    """
    objdump = shutil.which(OBJDUMP)
    if not objdump:
        raise NativeBuildError(f"{OBJDUMP} not found; install binutils-aarch64-linux-gnu")
    stats = {"instructions": 0, "sdot": 0, "udot": 0, "fp16_arith": 0}
    proc = subprocess.Popen([objdump, "-d", "--no-show-raw-insn", str(binary)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        # "  40a1c4:\tsdot\tv0.4s, v1.16b, v2.16b" -> mnemonic and operands are tab fields 2 and 3
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 2 or not parts[0].rstrip().endswith(":"):
            continue
        mnem = parts[1].strip()
        ops = parts[2] if len(parts) > 2 else ""
        stats["instructions"] += 1
        if mnem in ("sdot", "udot"):
            stats[mnem] += 1
        elif mnem.startswith("f") and not mnem.startswith("fcvt") and _FP16_OPERAND.search(ops):
            stats["fp16_arith"] += 1
    err = proc.stderr.read() if proc.stderr else ""
    if proc.wait() != 0:
        raise NativeBuildError(f"{OBJDUMP} -d {binary} failed: {err[-2000:]}")
    return stats
