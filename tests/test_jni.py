"""The JNI bridge (native/jni/) and io.finllm.edge.FinLlm, tested on a desktop JVM.

No Android SDK or NDK exists here, so the Java class the app uses is compiled with javac
from the app's own source tree and run on the host JVM against libfinllm_jni.so (built by
the native build driver, FE_BUILD_JNI=AUTO finds the JDK). The aarch64 builds cannot be
loaded by an x86 JVM, not even under qemu-user; they are checked by loading them with a
small aarch64 C program under qemu-aarch64 (tests/jvm/jni_smoke.c), which calls the two
bridge functions that need no JVM.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from finllm_edge.models import default_model_path
from finllm_edge.native.build import ensure_built, heavy_lock
from finllm_edge.paths import cache_dir

ROOT = Path(__file__).resolve().parent.parent
JAVA_PKG = ROOT / "android_demo" / "app" / "src" / "main" / "java" / "io" / "finllm" / "edge"
JAVA_SOURCES = [JAVA_PKG / "FinLlm.java", JAVA_PKG / "FinLlmException.java", JAVA_PKG / "FinLlmScheduler.java",
                JAVA_PKG / "DriftMonitor.java", JAVA_PKG / "DriftStatus.java"]
JVM_TEST = ROOT / "tests" / "jvm" / "FinLlmTest.java"
SMOKE_C = ROOT / "tests" / "jvm" / "jni_smoke.c"
SUPERBUILD = ROOT / "android_demo" / "app" / "src" / "main" / "cpp"
AARCH64_TOOLCHAIN = ROOT / "cmake" / "toolchains" / "aarch64-linux-gnu.cmake"
JDK_HINT = "install a JDK (apt-get install openjdk-17-jdk-headless; scripts/bootstrap.sh does it)"

EXPECTED_CHECKS = [
    "library_loads_and_reports_versions",
    "cpu_variant_choice",
    "missing_model_throws",
    "non_gguf_file_throws",
    "model_info",
    "utf8_round_trip",
    "streamed_generation",
    "profile_of_last_generation",
    "callback_false_stops",
    "callback_exception_propagates",
    "reentrant_call_from_callback_rejected",
    "cancel_from_another_thread",
    "context_overflow_throws",
    "concurrent_calls_are_serialized",
    "release_twice_and_use_after_release",
    "release_from_another_thread_during_generation",
    "prefix_reuse_and_saved_state",
    "grammar_and_json_schema",
]

# CPU variant -> (build-driver target, library name, qemu CPU that has the features)
ARM_VARIANTS = {
    "armv8.2-a+dotprod+fp16": ("linux-aarch64-dotprod", "finllm_jni_dotprod", "cortex-a76"),
    "armv8-a": ("linux-aarch64-armv8", "finllm_jni_armv8", "cortex-a53"),
}


def _jdk_tool(name: str) -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / name).exists():
        return str(Path(java_home) / "bin" / name)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"`{name}` not found; {JDK_HINT}")
    return found


def _jni_include_dirs() -> list[Path]:
    javac = Path(os.path.realpath(_jdk_tool("javac")))
    inc = javac.parent.parent / "include"
    if not (inc / "jni.h").exists():
        pytest.fail(f"no jni.h next to {javac} ({inc}); {JDK_HINT}")
    return [inc, inc / "linux"]


def _run(cmd: list[str], timeout: int = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def _find_lib(build_dir: Path, name: str) -> Path:
    hits = sorted(Path(build_dir).rglob(f"lib{name}.so"))
    assert hits, (f"lib{name}.so was not built in {build_dir}: the JNI target is skipped when CMake "
                  f"finds no jni.h ({JDK_HINT})")
    return hits[0]


def _declared_native_methods() -> set[str]:
    out = set()
    for cls in ("FinLlm", "FinLlmScheduler", "DriftMonitor"):
        text = (JAVA_PKG / f"{cls}.java").read_text()
        names = set(re.findall(r"\bnative\s+[\w\[\]]+\s+(\w+)\s*\(", text))
        assert len(names) >= 5, names
        out |= {f"Java_io_finllm_edge_{cls}_{n}" for n in names}
    return out


def _exported(nm: str, lib: Path) -> set[str]:
    out = _run([nm, "-D", "--defined-only", lib])
    assert out.returncode == 0, out.stderr
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def host_jni_lib() -> Path:
    info = ensure_built("host")
    return _find_lib(info.build_dir, "finllm_jni")


@pytest.fixture(scope="module")
def jvm_classes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("jvm-classes")
    # --release 11: FinLlm.java must not use JDK APIs newer than what Android desugars.
    res = _run([_jdk_tool("javac"), "--release", "11", "-Xlint:all", "-Werror", "-encoding", "UTF-8",
                "-d", out, *JAVA_SOURCES, JVM_TEST], timeout=300)
    assert res.returncode == 0, f"javac failed:\n{res.stdout}\n{res.stderr}"
    return out


_A77 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
_A53 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
CPUINFO_SAMPLES = {
    "snapdragon_865": "".join(f"processor\t: {i}\nBogoMIPS\t: 38.40\nFeatures\t: {_A77}\n\n" for i in range(8)),
    "cortex_a53": "".join(f"processor\t: {i}\nFeatures\t: {_A53}\n\n" for i in range(4)),
    "big_little_mixed": f"processor\t: 0\nFeatures\t: {_A77}\n\nprocessor\t: 1\nFeatures\t: {_A53}\n\n",
    "dotprod_without_fp16": "processor : 0\nFeatures : fp asimd asimddp\n",
    "fp16_without_dotprod": "processor : 0\nFeatures : fp asimd fphp asimdhp\n",
    "lowercase_key": "processor : 0\nfeatures : fp asimd fphp asimdhp asimddp\n",
    "no_features_line": "processor : 0\nBogoMIPS : 50.00\n",
}


def test_java_and_python_choose_the_same_cpu_variant(jvm_classes, tmp_path):
    """FinLlm.chooseLibrary (what the app does before System.loadLibrary) and
    finllm_edge.cpu_variant (what fe-dispatch and the device tools do) agree."""
    from finllm_edge.cpu_variant import choose_variant

    lib_of = {variant: lib for variant, (_, lib, _) in ARM_VARIANTS.items()}
    for name, text in CPUINFO_SAMPLES.items():
        f = tmp_path / f"{name}.txt"
        f.write_text(text)
        res = _run([_jdk_tool("java"), "-cp", jvm_classes, "FinLlmTest", "--choose", "aarch64", f], timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == lib_of[choose_variant(text)[0]], name
    res = _run([_jdk_tool("java"), "-cp", jvm_classes, "FinLlmTest", "--choose", "amd64",
                tmp_path / "snapdragon_865.txt"], timeout=120)
    assert res.stdout.strip() == "finllm_jni"


@pytest.mark.native
def test_finllm_java_on_desktop_jvm(host_jni_lib, jvm_classes):
    model = default_model_path()
    res = _run([_jdk_tool("java"), "-Xcheck:jni", f"-Djava.library.path={host_jni_lib.parent}",
                "-cp", jvm_classes, "FinLlmTest", model, ensure_built("host").variant], timeout=900)
    out = res.stdout
    print(out[-6000:])
    assert res.returncode == 0, f"FinLlmTest failed ({res.returncode}):\n{out[-6000:]}\n{res.stderr[-3000:]}"
    passed = re.findall(r"^PASS (\w+)$", out, re.M)
    assert passed == EXPECTED_CHECKS, f"checks that ran: {passed}"
    assert "ALL PASSED" in out
    # -Xcheck:jni reports JNI misuse (pending exceptions, bad refs) as warnings.
    assert "WARNING in native method" not in out + res.stderr, res.stderr[-3000:]
    prof = json.loads(re.search(r"PROFILE (\{.*\})", out).group(1))
    assert prof["ttft_ms"] > 0 and prof["decode_tok_s"] > 0 and prof["n_gen"] > 0


# Hostile model files (issue 20): each aborted the process through every binding before the
# validator's semantic rules; through JNI they must be a FinLlmException naming the field.
HOSTILE = ["expert_count_huge", "expert_used_without_experts", "expert_groups_without_experts",
           "nextn_above_block_count", "head_count_kv_array_zero", "rms_eps_nan", "rope_scaling_type_bogus",
           "tokenizer_llama_over_bpe", "bos_out_of_range", "merges_unknown_token", "alignment_below_32"]


@pytest.mark.native
def test_hostile_model_files_throw_finllm_exception(host_jni_lib, jvm_classes, tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    import gen_bad_gguf as gen

    cases = gen.defect_cases()
    args = []
    for name in HOSTILE:
        data, field = cases[name]
        (tmp_path / f"{name}.gguf").write_bytes(data)
        args.append(f"{tmp_path / name}.gguf={field}")
    res = _run([_jdk_tool("java"), "-Xcheck:jni", f"-Djava.library.path={host_jni_lib.parent}",
                "-cp", jvm_classes, "FinLlmTest", "--hostile", *args], timeout=300)
    out = res.stdout
    assert res.returncode == 0, f"FinLlmTest --hostile failed ({res.returncode}):\n{out[-4000:]}\n{res.stderr[-2000:]}"
    assert out.count("PASS hostile ") == len(HOSTILE), out[-3000:]


@pytest.mark.native
def test_jni_library_exports_exactly_the_native_methods(host_jni_lib):
    # Every `native` method of FinLlm.java has its Java_ function (else UnsatisfiedLinkError
    # on the phone), and nothing else leaks out (fe_*, llama_*, ggml_* stay internal).
    assert _exported("nm", host_jni_lib) == _declared_native_methods()


@pytest.mark.native
def test_jni_library_loads_without_a_jvm(host_jni_lib, tmp_path):
    smoke = tmp_path / "jni_smoke"
    inc = _jni_include_dirs()
    res = _run(["cc", "-Wall", "-Wextra", "-Werror", *[f"-I{d}" for d in inc], SMOKE_C, "-o", smoke, "-ldl"])
    assert res.returncode == 0, res.stderr
    res = _run([smoke, host_jni_lib], timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    variant = ensure_built("host").variant  # the host JNI library reports its x86 variant
    assert "version: finllm-edge 0." in res.stdout and f"variant: {variant}\n" in res.stdout + "\n"


def _aarch64_smoke(tmp_path: Path) -> Path:
    smoke = tmp_path / "jni_smoke_aarch64"
    inc = _jni_include_dirs()  # jni.h is arch-independent; Linux jni_md.h is the same on aarch64
    res = _run(["aarch64-linux-gnu-gcc", "-Wall", "-Wextra", "-Werror", *[f"-I{d}" for d in inc],
                SMOKE_C, "-o", smoke, "-ldl"])
    assert res.returncode == 0, res.stderr
    return smoke


def _check_aarch64_lib(lib: Path, variant: str, smoke: Path, qemu_cpu: str) -> None:
    hdr = _run(["aarch64-linux-gnu-readelf", "-h", lib]).stdout
    assert "AArch64" in hdr and "DYN" in hdr, hdr
    assert _exported("aarch64-linux-gnu-nm", lib) == _declared_native_methods()
    # An x86 JVM cannot load an aarch64 library, even under qemu-user: load it with the
    # aarch64 smoke program instead (dynamic loader and libs from the Debian cross sysroot).
    res = _run(["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", "-cpu", qemu_cpu, smoke, lib], timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"variant: {variant}\n" in res.stdout, res.stdout
    assert "version: finllm-edge 0." in res.stdout and "llama.cpp 0.3.36 (" in res.stdout


@pytest.mark.native
@pytest.mark.emulated
@pytest.mark.parametrize("variant", list(ARM_VARIANTS))
def test_jni_cross_builds_for_linux_aarch64(variant, tmp_path):
    target, libname, qemu_cpu = ARM_VARIANTS[variant]
    info = ensure_built(target)
    lib = _find_lib(info.build_dir, libname)
    _check_aarch64_lib(lib, variant, _aarch64_smoke(tmp_path), qemu_cpu)


@pytest.mark.native
@pytest.mark.emulated
def test_android_superbuild_compiles_both_variants_with_a_cross_compiler(tmp_path):
    """android_demo's CMake project (the one Gradle runs with the NDK), configured here with
    the Debian aarch64 cross compiler and the build driver's aarch64 llama.cpp prefixes:
    both variant libraries build in one project, and each reports its own variant."""
    prefixes = {v: ensure_built(t).llama_prefix for v, (t, _, _) in ARM_VARIANTS.items()}
    # Keyed by checkout (like the driver's build dirs): a CMake cache is tied to its source path.
    checkout = hashlib.sha256(str(ROOT.resolve()).encode()).hexdigest()[:10]
    build = cache_dir() / "native" / f"android-superbuild-aarch64-{checkout}"
    args = ["cmake", "-S", SUPERBUILD, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_TOOLCHAIN_FILE={AARCH64_TOOLCHAIN}",
            f"-DFE_LLAMA_PREFIX_DOTPROD={prefixes['armv8.2-a+dotprod+fp16']}",
            f"-DFE_LLAMA_PREFIX_ARMV8={prefixes['armv8-a']}"]
    with heavy_lock():
        res = _run(args)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
        res = _run(["cmake", "--build", build, "-j", os.environ.get("FINLLM_EDGE_JOBS", "2")], timeout=1800)
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    smoke = _aarch64_smoke(tmp_path)
    for variant, (_, libname, qemu_cpu) in ARM_VARIANTS.items():
        _check_aarch64_lib(_find_lib(build, libname), variant, smoke, qemu_cpu)
