"""x86-64 host variants chosen at run time, from the one variant table (native/variants.json).

- the rule on synthetic /proc/cpuinfo texts (Python, finllm_edge.cpu_variant);
- the table against the build flags of each target (a variant's features cover every -m
  flag its llama.cpp build uses; AMX off everywhere);
- the C launcher (native/dispatch, its table generated from the same JSON) makes the same
  choice in the same words as Python, for x86 and ARM cpuinfo texts (built here, seconds);
- library_path(): FINLLM_EDGE_LIB, FINLLM_EDGE_VARIANT (refused when the CPU lacks the
  features), the best built variant;
- [native] the built libraries: each host variant's libfinllm_edge.so is found and its
  fe_build_variant() names its variant; llama.cpp's common library links (Jinja, grammar).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from finllm_edge import cpu_variant as cv
from finllm_edge.cpu_variant import NativeLibraryError, choose, choose_variant, features_from_cpuinfo

REPO = Path(__file__).resolve().parent.parent
TABLE = json.loads((REPO / "native" / "variants.json").read_text())

AVX512 = "x86-64-avx512-vnni"
AVX2 = "x86-64-avx2"

_BASE_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat clflush mmx fxsr sse sse2 ht nx lm"
# Haswell: AVX2/FMA/F16C/BMI2, no AVX-512
HASWELL = (f"{_BASE_FLAGS} pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand"
           " bmi1 avx2 bmi2 erms")
# Skylake-SP: AVX-512 F/CD/BW/DQ/VL but no VNNI
SKYLAKE_SP = HASWELL + " avx512f avx512dq avx512cd avx512bw avx512vl"
# Ice Lake / Zen 4 (this machine's kind): AVX-512 + VNNI (+ more the table does not need)
ICELAKE = SKYLAKE_SP + " avx512ifma avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq"
# Sandy Bridge: AVX only
SANDY = f"{_BASE_FLAGS} pni pclmulqdq ssse3 cx16 sse4_1 sse4_2 popcnt aes xsave avx"


def cpuinfo(*cores: str) -> str:
    return "".join(f"processor\t: {i}\nvendor_id\t: GenuineIntel\nflags\t\t: {f}\n\n" for i, f in enumerate(cores))


# ---------------------------------------------------------------- the rule (Python)

def test_avx2_only_cpu_gets_avx2():
    variant, reason = choose_variant(cpuinfo(HASWELL, HASWELL), arch="x86_64")
    assert variant == AVX2
    assert "avx512f=no" in reason and reason.endswith("-> missing AVX-512/VNNI, AVX2/FMA/F16C present")


def test_avx512_without_vnni_gets_avx2():
    variant, reason = choose_variant(cpuinfo(SKYLAKE_SP), arch="x86_64")
    assert variant == AVX2
    assert "avx512f=yes" in reason and "avx512_vnni=no" in reason


def test_avx512_vnni_cpu_gets_avx512():
    variant, reason = choose_variant(cpuinfo(ICELAKE, ICELAKE), arch="x86_64")
    assert variant == AVX512
    assert reason.endswith("-> AVX-512 and VNNI present")


def test_weakest_core_decides_on_x86_too():
    assert choose_variant(cpuinfo(ICELAKE, SKYLAKE_SP), arch="x86_64")[0] == AVX2


def test_cpu_without_avx2_has_no_variant():
    with pytest.raises(ValueError, match="no runnable variant"):
        choose_variant(cpuinfo(SANDY), arch="x86_64")
    with pytest.raises(ValueError):  # unreadable: the x86 baseline needs AVX2, so no guess
        choose_variant("processor : 0\n", arch="x86_64")


def test_x86_reads_flags_lines_arm_reads_features_lines():
    both = "processor : 0\nflags : avx2\nFeatures : asimddp\n"
    assert features_from_cpuinfo(both, "x86_64").features == {"avx2"}
    assert features_from_cpuinfo(both, "aarch64").features == {"asimddp"}


def test_only_installed_x86_variants_are_chosen():
    feats = features_from_cpuinfo(cpuinfo(ICELAKE), "x86_64")
    variant, reason = choose(feats, available=[AVX2], arch="x86_64")
    assert variant == AVX2 and reason.endswith(f"; {AVX512} supported but not installed")


# ---------------------------------------------------------------- one table

def test_arm_rule_comes_from_the_table():
    arm = TABLE["arches"]["aarch64"]
    assert cv.VARIANTS == tuple(v["name"] for v in arm["variants"])
    assert cv.REQUIRED_FEATURES == {v["name"]: tuple(v["features"]) for v in arm["variants"]}
    assert cv.HWCAP_BITS == {k: 1 << b for k, b in arm["hwcap_bits"].items()}
    assert (cv.VARIANT_DOTPROD, cv.VARIANT_BASE) == ("armv8.2-a+dotprod+fp16", "armv8-a")


def test_packaged_table_is_the_native_one():
    # finllm_edge/_lib/variants.json is a symlink in the checkout, a copy in a wheel
    assert cv.table_path().resolve() == (REPO / "native" / "variants.json").resolve()
    assert json.loads(cv.table_path().read_text()) == TABLE


# ggml's x86 CMake options -> the -m flags they add -> /proc/cpuinfo words (ggml/src/ggml-cpu/CMakeLists.txt)
_GGML_X86 = {
    "GGML_SSE42": ["sse4_2"], "GGML_AVX": ["avx"], "GGML_AVX2": ["avx2"], "GGML_FMA": ["fma"],
    "GGML_F16C": ["f16c"], "GGML_BMI2": ["bmi2"], "GGML_AVX_VNNI": ["avx_vnni"],
    "GGML_AVX512": ["avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"],
    "GGML_AVX512_VBMI": ["avx512vbmi"], "GGML_AVX512_VNNI": ["avx512_vnni"], "GGML_AVX512_BF16": ["avx512_bf16"],
    "GGML_AMX_TILE": ["amx_tile"], "GGML_AMX_INT8": ["amx_int8"], "GGML_AMX_BF16": ["amx_bf16"],
}
# ON by default when GGML_NATIVE=OFF (INS_ENB), as the build logs show (-msse4.2 -mbmi2)
_GGML_DEFAULT_ON = {"GGML_SSE42", "GGML_AVX", "GGML_AVX2", "GGML_BMI2", "GGML_FMA", "GGML_F16C"}


def _x86_features_of(args: tuple[str, ...]) -> set[str]:
    on = set(_GGML_DEFAULT_ON)
    for a in args:
        if a.startswith("-DGGML_") and "=" in a:
            key, val = a[2:].split("=", 1)
            if key in _GGML_X86:
                (on.add if val.upper() == "ON" else on.discard)(key)
    return {f for k in on for f in _GGML_X86[k]}


def test_x86_table_features_match_the_build_flags():
    from finllm_edge.native.targets import HOST_VARIANT_TARGETS, get_target

    variants = TABLE["arches"]["x86_64"]["variants"]
    assert HOST_VARIANT_TARGETS == tuple(v["target"] for v in variants)
    for v in variants:
        tgt = get_target(v["target"])
        assert tgt.variant == v["name"]
        assert "-DGGML_NATIVE=OFF" in tgt.llama_args, "GGML_NATIVE=ON would take the AMX path"
        for amx in ("TILE", "INT8", "BF16"):
            assert f"-DGGML_AMX_{amx}=OFF" in tgt.llama_args
        assert _x86_features_of(tgt.llama_key_args) == set(v["features"]), v["name"]
    assert get_target("host").variant == AVX2 and get_target("host-asan").variant == AVX2


def test_arm_table_matches_the_build_flags():
    from finllm_edge.native.targets import get_target

    for v in TABLE["arches"]["aarch64"]["variants"]:
        tgt = get_target(v["target"])
        assert f"-DGGML_CPU_ARM_ARCH={v['name']}" in tgt.llama_args and tgt.variant == v["name"]
        uses_dotprod_fp16 = "+dotprod" in v["name"] and "+fp16" in v["name"]
        assert uses_dotprod_fp16 == bool({"asimddp", "fphp", "asimdhp"} <= set(v["features"]))


# ---------------------------------------------------------------- the C launcher, same table

@pytest.fixture(scope="module")
def launchers(tmp_path_factory):
    """fe-dispatch built for this host twice: with the x86 table and with the aarch64 one."""
    cmake, ninja = shutil.which("cmake"), shutil.which("ninja")
    assert cmake and ninja, "cmake and ninja are needed (scripts/bootstrap.sh installs them)"
    out = {}
    for arch in ("x86_64", "aarch64"):
        b = tmp_path_factory.mktemp(f"dispatch-{arch}")
        subprocess.run([cmake, "-S", str(REPO / "native" / "dispatch"), "-B", str(b), "-G", "Ninja",
                        f"-DFE_DISPATCH_ARCH={arch}", "-DFE_DISPATCH_STATIC=OFF"],
                       check=True, capture_output=True, text=True)
        subprocess.run([cmake, "--build", str(b)], check=True, capture_output=True, text=True)
        d = tmp_path_factory.mktemp(f"bin-{arch}")
        shutil.copy2(b / "fe-dispatch", d / "fe-bench")
        for v in TABLE["arches"][arch]["variants"]:
            exe = d / f"fe-bench-{v['name']}"
            exe.write_text("#!/bin/sh\necho \"ran $FE_VARIANT\"\n")
            exe.chmod(0o755)
        out[arch] = d
    return out


def _dispatch(d: Path, text: str, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    f = tmp_path / "cpuinfo.txt"
    f.write_text(text)
    e = {k: v for k, v in os.environ.items() if not k.startswith("FE_")} | {"FE_DISPATCH_CPUINFO": str(f)} | env
    return subprocess.run([str(d / "fe-bench")], capture_output=True, text=True, env=e, timeout=30)


_A77 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
_A53 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
SAMPLES = {
    "x86_64": {"haswell": cpuinfo(HASWELL), "skylake_sp": cpuinfo(SKYLAKE_SP), "icelake": cpuinfo(ICELAKE, ICELAKE),
               "mixed": cpuinfo(ICELAKE, HASWELL), "this_machine": Path("/proc/cpuinfo").read_text()},
    "aarch64": {"sd865": "".join(f"processor\t: {i}\nFeatures\t: {_A77}\n\n" for i in range(8)),
                "a53": f"processor\t: 0\nFeatures\t: {_A53}\n\n",
                "big_little": f"processor\t: 0\nFeatures\t: {_A77}\n\nprocessor\t: 1\nFeatures\t: {_A53}\n\n",
                "dotprod_no_fp16": "processor : 0\nFeatures : fp asimd asimddp\n",
                "lowercase_key": "processor : 0\nfeatures : fp asimd fphp asimdhp asimddp\n",
                "no_features": "processor : 0\nBogoMIPS : 50.00\n"},
}


@pytest.mark.parametrize("arch,name", [(a, n) for a, s in SAMPLES.items() for n in s])
def test_launcher_and_python_agree(launchers, tmp_path, arch, name):
    text = SAMPLES[arch][name]
    if arch == "x86_64" and name == "this_machine" and "flags" not in text:
        pytest.fail("this test expects an x86-64 /proc/cpuinfo")
    proc = _dispatch(launchers[arch], text, tmp_path, FE_DISPATCH_DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    variant, path, reason = proc.stdout.rstrip("\n").split("\t", 2)
    assert (variant, reason) == choose_variant(text, arch=arch)
    assert path == str(launchers[arch] / f"fe-bench-{variant}")


def test_launcher_runs_the_variant_and_refuses_an_unsupported_override(launchers, tmp_path):
    d = launchers["x86_64"]
    run = _dispatch(d, cpuinfo(ICELAKE), tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == f"ran {AVX512}"
    refused = _dispatch(d, cpuinfo(HASWELL), tmp_path, FE_VARIANT_OVERRIDE=AVX512)
    assert refused.returncode == 127 and "refused: this CPU lacks its features" in refused.stderr
    forced = _dispatch(d, cpuinfo(ICELAKE), tmp_path, FE_VARIANT_OVERRIDE=AVX2)
    assert forced.returncode == 0 and forced.stdout.strip() == f"ran {AVX2}"
    none = _dispatch(d, cpuinfo(SANDY), tmp_path)
    assert none.returncode == 127 and "no runnable variant" in none.stderr


# ---------------------------------------------------------------- library_path()

@pytest.fixture()
def fake_libs(tmp_path, monkeypatch):
    """An empty cache and a package _lib/ with both x86 variants 'built'."""
    monkeypatch.setenv("FINLLM_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FINLLM_EDGE_LIB", raising=False)
    monkeypatch.delenv("FINLLM_EDGE_VARIANT", raising=False)
    lib = tmp_path / "_lib"
    monkeypatch.setattr(cv, "PACKAGE_LIB_DIR", lib)
    paths = {}
    for v in (AVX512, AVX2):
        p = lib / v / cv.LIB_NAME
        p.parent.mkdir(parents=True)
        p.write_bytes(b"\x7fELF fake")
        paths[v] = p
    return paths


def test_library_path_picks_the_best_built_variant(fake_libs):
    assert cv.library_path(cpuinfo_text=cpuinfo(ICELAKE), arch="x86_64") == fake_libs[AVX512]
    assert cv.library_path(cpuinfo_text=cpuinfo(HASWELL), arch="x86_64") == fake_libs[AVX2]
    fake_libs[AVX512].unlink()
    choice = cv.choose_library(cpuinfo_text=cpuinfo(ICELAKE), arch="x86_64")
    assert choice.path == fake_libs[AVX2] and "supported but not installed" in choice.reason


def test_variant_override_is_refused_when_the_cpu_lacks_features(fake_libs, monkeypatch):
    monkeypatch.setenv("FINLLM_EDGE_VARIANT", AVX512)
    with pytest.raises(NativeLibraryError, match=r"refused: this CPU lacks avx512_vnni .*SIGILL"):
        cv.library_path(cpuinfo_text=cpuinfo(SKYLAKE_SP), arch="x86_64")
    assert cv.library_path(cpuinfo_text=cpuinfo(ICELAKE), arch="x86_64") == fake_libs[AVX512]
    monkeypatch.setenv("FINLLM_EDGE_VARIANT", "host")  # a target name works too
    assert cv.library_path(cpuinfo_text=cpuinfo(ICELAKE), arch="x86_64") == fake_libs[AVX2]
    monkeypatch.setenv("FINLLM_EDGE_VARIANT", "armv8-a")
    with pytest.raises(NativeLibraryError, match="not a x86_64 variant"):
        cv.library_path(cpuinfo_text=cpuinfo(ICELAKE), arch="x86_64")


def test_variant_override_of_an_unbuilt_variant_says_how_to_build_it(fake_libs, monkeypatch):
    fake_libs[AVX512].unlink()
    monkeypatch.setenv("FINLLM_EDGE_VARIANT", AVX512)
    with pytest.raises(NativeLibraryError, match="--target host-avx512"):
        cv.library_path(cpuinfo_text=cpuinfo(ICELAKE), arch="x86_64")


def test_finllm_edge_lib_forces_a_file(fake_libs, monkeypatch, tmp_path):
    mine = tmp_path / "custom" / "libfinllm_edge.so"
    mine.parent.mkdir()
    mine.write_bytes(b"x")
    monkeypatch.setenv("FINLLM_EDGE_LIB", str(mine))
    monkeypatch.setenv("FINLLM_EDGE_VARIANT", AVX512)  # FINLLM_EDGE_LIB wins
    assert cv.library_path(cpuinfo_text=cpuinfo(HASWELL), arch="x86_64") == mine
    monkeypatch.setenv("FINLLM_EDGE_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(NativeLibraryError, match="does not exist"):
        cv.library_path(arch="x86_64")


def test_nothing_built_says_what_to_run(fake_libs):
    for p in fake_libs.values():
        p.unlink()
    with pytest.raises(NativeLibraryError, match="finllm-edge native build"):
        cv.library_path(cpuinfo_text=cpuinfo(ICELAKE), arch="x86_64")


def test_library_lookup_falls_back_to_the_build_cache(fake_libs, tmp_path):
    for p in fake_libs.values():
        p.unlink()
    v = cv.arch_table("x86_64").variant(AVX2)
    cached = tmp_path / "cache" / "native" / f"host-{cv.checkout_key()}" / "lib" / cv.LIB_NAME
    assert cv.library_candidates(v)[1] == cached
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert cv.library_path(cpuinfo_text=cpuinfo(ICELAKE), arch="x86_64") == cached


def test_cpu_variant_imports_only_the_standard_library():
    code = ("import sys; import finllm_edge.cpu_variant as c; c.arch_table('x86_64'); "
            "bad = [m for m in ('numpy', 'llama_cpp', 'torch') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- the built libraries

@pytest.fixture(scope="module")
def built_variants():
    from finllm_edge.native.build import ensure_host_variants

    return {info.variant: info for info in ensure_host_variants()}


@pytest.mark.native
def test_library_path_finds_the_built_libraries_and_each_names_its_variant(built_variants, monkeypatch):
    monkeypatch.delenv("FINLLM_EDGE_LIB", raising=False)
    monkeypatch.delenv("FINLLM_EDGE_VARIANT", raising=False)
    assert set(built_variants) == {AVX512, AVX2}
    built = cv.built_libraries("x86_64")
    for name, info in built_variants.items():
        # copied into the package (what a wheel carries), identical to the build output
        assert built[name] == cv.PACKAGE_LIB_DIR / name / cv.LIB_NAME
        assert built[name].read_bytes() == Path(info.lib_shared).read_bytes()
    feats = cv.host_features("x86_64")
    best = choose(feats, tuple(built), "x86_64")[0]
    assert cv.library_path() == built[best]
    for name, path in built.items():
        if not cv.variant_runs(feats, cv.arch_table("x86_64").variant(name)):
            # a CPU without the features: never loaded (SIGILL), refused by name, and the
            # name it would report is in the file
            monkeypatch.setenv("FINLLM_EDGE_VARIANT", name)
            with pytest.raises(NativeLibraryError, match="refused"):
                cv.library_path()
            monkeypatch.delenv("FINLLM_EDGE_VARIANT")
            assert b"\0" + name.encode() + b"\0" in path.read_bytes()
            continue
        code = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); lib.fe_build_variant.restype = ctypes.c_char_p; "
                "print(lib.fe_build_variant().decode())")
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == name
        monkeypatch.setenv("FINLLM_EDGE_VARIANT", name)
        assert cv.library_path() == path
        monkeypatch.delenv("FINLLM_EDGE_VARIANT")


@pytest.mark.native
def test_llama_common_links_from_the_prefix(built_variants, tmp_path):
    """llama.cpp's common library in the stage-1 prefix: a chat template rendered by its Jinja
    engine and a JSON schema turned into a grammar, linked through fe::llama (cmake/checks)."""
    import finllm_edge.native.build as nb

    info = built_variants[AVX2]
    stamp = json.loads((Path(info.llama_prefix) / nb.STAMP).read_text())
    b = tmp_path / "b"
    subprocess.run(["cmake", "-S", str(REPO / "cmake" / "checks"), "-B", str(b), "-G", "Ninja",
                    f"-DFE_LLAMA_PREFIX={info.llama_prefix}", f"-DFE_LLAMA_OPENMP={'ON' if stamp['openmp'] else 'OFF'}",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True, text=True)
    with nb.heavy_lock():
        proc = subprocess.run(["cmake", "--build", str(b)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    nm = subprocess.run(["nm", "-C", str(b / "llama-common-link")], capture_output=True, text=True, check=True).stdout
    assert "httplib" not in nm  # the HTTP/download part of common is not pulled in
    run = subprocess.run([str(b / "llama-common-link")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("<|im_start|>user\nWhat is EBITDA?<|im_end|>\n<|im_start|>assistant\n")
    assert 'root ::= "{" space ticker-kv "," space price-kv space "}"' in run.stdout
