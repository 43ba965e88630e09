"""The host build of native/: C tests via ctest, the exported ABI, and fe-bench end to end.

Builds what is missing through finllm_edge.native.build.ensure_built (llama.cpp once per
pin and flags, our code incrementally), so a fresh clone runs these without setup.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from finllm_edge.models import default_model_path
from finllm_edge.native import build as nb
from finllm_edge.native.fetch import llama_version_string
from finllm_edge.profile import percentile, validate_profile

pytestmark = [pytest.mark.native, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def host() -> nb.BuildInfo:
    return nb.ensure_built("host")


@pytest.fixture(scope="module")
def model() -> Path:
    return default_model_path()


def run(cmd, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


# ---------------------------------------------------------------- build + C tests


def test_ctest_all_pass(host):
    proc = run(["ctest", "--test-dir", host.ctest_dir, "--output-on-failure"], timeout=1800)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    # every registered C test ran; none skipped ("Not Run" / "Skipped" would show here)
    assert "100% tests passed" in proc.stdout
    listed = run(["ctest", "--test-dir", host.ctest_dir, "-N"]).stdout
    names = set(re.findall(r"Test\s+#\d+: (\S+)", listed))
    assert {"header_c", "bad_inputs", "generate", "threads", "device"} <= names
    assert "Skipped" not in proc.stdout and "Not Run" not in proc.stdout


def test_shared_lib_exports_exactly_the_header_api(host):
    header = (ROOT / "native" / "include" / "finllm_edge.h").read_text()
    declared = set(re.findall(r"FE_API\s+[\w\s\*]*?\b(fe_\w+)\s*\(", header))
    assert len(declared) >= 25
    out = run(["nm", "-D", "--defined-only", host.lib_shared]).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert exported == declared, (exported ^ declared)


def test_second_build_is_a_no_op(host):
    stamp = host.llama_prefix / nb.STAMP
    before = stamp.stat().st_mtime, host.lib_shared.stat().st_mtime, host.fe_bench.stat().st_mtime
    t0 = time.time()
    again = nb.ensure_built("host")
    assert again.llama_prefix == host.llama_prefix
    after = stamp.stat().st_mtime, again.lib_shared.stat().st_mtime, again.fe_bench.stat().st_mtime
    assert after == before  # llama.cpp not rebuilt, our code not relinked
    # up to date: a ninja dry run, no waiting for the shared heavy-build lock
    assert time.time() - t0 < 30


def test_build_dirs_are_keyed_right(monkeypatch, host):
    from finllm_edge.native.targets import get_target

    tgt = get_target("host")
    mine = nb.native_build_dir(tgt)
    assert mine == host.build_dir
    monkeypatch.setattr(nb, "repo_root", lambda: Path("/tmp/some-other-clone"))
    # a fresh clone gets its own build dir for our code but reuses the llama.cpp prefix
    assert nb.native_build_dir(tgt) != mine
    assert nb.llama_prefix_dir(tgt) == host.llama_prefix.parent


def test_targets_table():
    from finllm_edge import pins
    from finllm_edge.errors import NativeBuildError
    from finllm_edge.native.targets import TARGETS, get_target

    assert {"host", "host-asan", "linux-aarch64-dotprod", "linux-aarch64-armv8"} <= set(TARGETS)
    host = get_target("host")
    for flag in pins.X86_SAFE_CMAKE_ARGS:
        assert flag in host.llama_key_args
    assert "-DGGML_AMX_INT8=OFF" in host.llama_key_args
    dot, v8 = get_target("linux-aarch64-dotprod"), get_target("linux-aarch64-armv8")
    assert "-DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod+fp16" in dot.llama_args
    assert "-DGGML_CPU_ARM_ARCH=armv8-a" in v8.llama_args
    for t in (dot, v8):
        assert (ROOT / t.toolchain).exists()
        assert "-DCMAKE_EXE_LINKER_FLAGS=-static" in t.llama_args
    # distinct stage-1 builds per variant; host and host-asan share one
    keys = {nb.llama_prefix_dir(get_target(n)) for n in ("host", "linux-aarch64-dotprod", "linux-aarch64-armv8")}
    assert len(keys) == 3
    assert nb.llama_prefix_dir(get_target("host-asan")) == nb.llama_prefix_dir(host)
    with pytest.raises(NativeBuildError, match="unknown native target"):
        get_target("windows-itanium")


def test_native_info_cli(host):
    proc = run([ROOT / ".venv" / "bin" / "finllm-edge", "native", "info"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    for key in ("lib_shared", "lib_static", "fe_bench", "llama_prefix", "ctest_dir"):
        assert Path(info[key]).exists(), key
    assert set(info["tools"]) >= {"llama-bench", "llama-quantize", "llama-perplexity", "llama-imatrix",
                                  "llama-simple", "llama-completion"}
    for path in info["tools"].values():
        assert Path(path).is_file()
    assert info["llama_cpp_version"] == llama_version_string()


def test_upstream_tools_run(host):
    proc = run([host.tools["llama-bench"], "--help"])
    assert proc.returncode == 0 and "usage" in (proc.stdout + proc.stderr).lower()
    proc = run([host.tools["llama-quantize"], "--help"])
    assert proc.returncode in (0, 1) and "Q4_0" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- fe-bench


def test_fe_bench_profile_is_valid(host, model, tmp_path):
    out = tmp_path / "profile.json"
    proc = run([host.fe_bench, "-m", model, "-t", "1", "-p", "16", "-n", "8", "-r", "1", "--warmup", "1",
                "-o", out])
    assert proc.returncode == 0, proc.stderr
    assert "decode tok/s" in proc.stderr  # the readable table
    prof = validate_profile(json.loads(out.read_text()))
    assert prof["tool"] == "fe-bench"
    assert prof["llama_cpp_version"] == llama_version_string()
    assert prof["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert prof["model_size_bytes"] == model.stat().st_size
    assert "Q4_1" in prof["model_type"]
    assert (prof["n_prompt"], prof["n_gen"], prof["repetitions"], prof["warmup"], prof["n_threads"]) == (16, 8, 1, 1, 1)
    assert len(prof["token_ms"]) == 7
    # provenance comes from the loaded library itself (fe_build_variant(); "" -> null)
    assert prof["emulated"] is False and prof["variant"] == (host.variant or None)
    assert prof["tool_version"] == host.finllm_edge_version
    for q in (50, 90, 99):
        assert prof[f"token_ms_p{q}"] == pytest.approx(percentile(prof["token_ms"], q), abs=2e-3)
    assert prof["decode_tok_s"] == pytest.approx(1000 * 7 / sum(prof["token_ms"]), rel=1e-3)
    assert prof["decode_tok_s_min"] <= prof["decode_tok_s"] <= prof["decode_tok_s_max"]
    assert 0 < prof["ttft_ms"] <= prof["e2e_ms"]
    assert prof["load_ms"] > 0 and prof["peak_rss_mb"] > 50
    assert prof["device"]["cores_total"] >= 1 and prof["device"]["affinity"]


def test_fe_bench_json_on_stdout_and_options(host, model, tmp_path):
    text = tmp_path / "prompt.txt"
    text.write_text("Quarterly revenue rose 12% while operating margin narrowed. " * 3)
    proc = run([host.fe_bench, "-m", model, "-t", "1", "--cpu-mask", "0x1", "--prompt-file", text,
                "-p", "40", "-n", "4", "-r", "2", "--warmup", "0", "-c", "128", "--json-only", "--emulated"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""  # --json-only: no table, llama.cpp logs silenced
    prof = validate_profile(json.loads(proc.stdout))
    assert prof["device"]["affinity"] == [0] and prof["device"]["cores_used"] == [0]
    assert (prof["n_prompt"], prof["n_ctx"], prof["repetitions"], prof["warmup"]) == (40, 128, 2, 0)
    assert prof["emulated"] is True


def test_fe_bench_default_threads_and_random_prompt(host, model):
    # no -t: the library's big-core rule (fe_default_n_threads) over the pinned mask
    proc = run([host.fe_bench, "-m", model, "--cpu-mask", "0x1", "--random-prompt", "-p", "12", "-n", "3",
                "-r", "1", "--warmup", "0", "--json-only"])
    assert proc.returncode == 0, proc.stderr
    prof = validate_profile(json.loads(proc.stdout))
    assert prof["n_threads"] == 1 and prof["device"]["cores_used"] == [0]
    assert (prof["n_prompt"], prof["n_gen"], len(prof["token_ms"])) == (12, 3, 2)


def _truncated_model(model: Path, tmp_path: Path) -> Path:
    p = tmp_path / "truncated.gguf"
    with open(model, "rb") as f:
        p.write_bytes(f.read(1 << 20))
    return p


BAD_INPUTS = {
    "missing file": (lambda m, t: ["-m", t / "nope.gguf"], 1, "No such file"),
    "text file renamed .gguf": (lambda m, t: ["-m", _write(t / "notes.gguf", b"quarterly notes\n")], 1,
                                "not a GGUF file"),
    "empty file": (lambda m, t: ["-m", _write(t / "empty.gguf", b"")], 1, "GGUF header"),
    "directory": (lambda m, t: ["-m", t], 1, "not a regular file"),
    "truncated model": (lambda m, t: ["-m", _truncated_model(m, t)], 1, "GGUF"),
    "zero threads": (lambda m, t: ["-m", m, "-t", "0"], 2, "-t"),
    "unknown option": (lambda m, t: ["-m", m, "--frobnicate"], 2, "unknown option"),
    "no model": (lambda m, t: ["-p", "8"], 2, "no model given"),
    "bad cpu mask": (lambda m, t: ["-m", m, "--cpu-mask", "zz"], 1, "not a hex mask"),
    "cpu mask of absent cpus": (lambda m, t: ["-m", m, "--cpu-mask", "0x100000000"], 1, "sched_setaffinity"),
    "prompt over context": (lambda m, t: ["-m", m, "-p", "64", "-n", "8", "-c", "32", "-r", "1"], 1, "n_ctx = 32"),
    "missing prompt file": (lambda m, t: ["-m", m, "--prompt-file", t / "none.txt"], 1, "cannot read --prompt-file"),
    "empty prompt file": (lambda m, t: ["-m", m, "--prompt-file", _write(t / "e.txt", b"")], 1, "empty or not text"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_fe_bench_bad_input_fails_cleanly(host, model, tmp_path, case):
    make_args, want_rc, needle = BAD_INPUTS[case]
    proc = run([host.fe_bench, *make_args(model, tmp_path), "-r", "1", "--warmup", "0", "-n", "4"]
               if case not in ("zero threads", "unknown option", "no model", "prompt over context")
               else [host.fe_bench, *make_args(model, tmp_path)])
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}"
    assert proc.returncode == want_rc, proc.stderr
    assert proc.stderr.startswith("fe-bench: error: "), proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert proc.stdout == ""
