"""Bounded fuzzing of the GGUF validator (long runs: scripts/fuzz_gguf.py for bytes,
scripts/fuzz_gguf_values.py for values).

The core (through the Python binding) must raise nothing but GGUFValidationError; the same C
source built with ASan+UBSan must not die of a signal or print a sanitizer report, and both
builds must give the same verdict. Value mutants loaded through the C API must not kill the
process.
"""
from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gguf_tools import ROOT, build_c_validator, run_c_validator, sanitizer_report  # noqa: E402


def _load_script():
    spec = importlib.util.spec_from_file_location("fuzz_gguf", ROOT / "scripts/fuzz_gguf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fuzz_gguf = _load_script()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    return {"work": work, "exe": build_c_validator(work, sanitize=True),
            "bases": {b.name: b for b in fuzz_gguf.bases(work)}}


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(rnd=st.randoms(use_true_random=False), which=st.sampled_from(["tiny"] * 4 + ["smollm2"]))
def test_mutants_get_the_same_clean_verdict_from_the_core_and_the_sanitized_build(env, rnd: random.Random, which: str):
    path = env["work"] / "mutant.gguf"
    fuzz_gguf.write_mutant(path, env["bases"][which], rnd)
    core = fuzz_gguf.python_verdict(path)
    verdicts, proc = run_c_validator(env["exe"], [path], sanitize=True)
    assert sanitizer_report(proc.stderr) is None, proc.stderr[-3000:]
    assert proc.returncode in (0, 1), (proc.returncode, proc.stderr[-3000:])
    assert len(verdicts) == 1 and fuzz_gguf.agree(core, verdicts[0]), (core, verdicts)


@pytest.mark.slow
def test_fuzz_script_short_run_finds_nothing():
    """The script end to end, including llama.cpp loading every mutant both validators accept."""
    r = fuzz_gguf.fuzz(seconds=10, seed=1234, use_llama=True)
    assert r["executions"] > 200
    assert r["llama_cpp_on_accepted"]["loaded"] > 0
    assert (r["crashes"], r["mismatches"]) == (0, 0), r["findings"][:5]
    assert "executions/s" in fuzz_gguf.table(r)


def _load_values_script():
    spec = importlib.util.spec_from_file_location("fuzz_gguf_values", ROOT / "scripts/fuzz_gguf_values.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.native
def test_value_fuzzer_short_seeded_run_finds_no_signal_and_no_hang(tmp_path):
    """400 value mutants of the llama and qwen2 bases through the C API (load + one token)."""
    fv = _load_values_script()
    r = fv.fuzz(runs=400, seed=4242, out=tmp_path / "findings", work=tmp_path, timeout=30)
    assert r["executions"] == 400
    assert r["loaded_and_ran"] > 20 and r["refused_by_validator"] > 100, fv.table(r)
    assert (r["signals"], r["hangs"], r["died_otherwise"]) == (0, 0, 0), r["findings"][:5]
