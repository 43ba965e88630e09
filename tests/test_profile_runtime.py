"""profiler.build_profile -> the shared LatencyProfile schema, from synthetic timings (no model)."""

import copy
import hashlib

import pytest

from finllm_edge.profile import ProfileSchemaError, percentile, validate_profile
from finllm_edge.profiler import ModelInfo, RunTimings, build_profile, one_line

DEVICE = {"cpu_model": "test cpu", "arch": "x86_64", "cores_total": 2, "cores_used": [0, 1], "affinity": [0, 1],
          "governor": {}, "max_freq_khz": {}, "mem_total_mb": 1024.0}


def run(prefill_s: float, token_ms: list[float], n_prompt: int = 10) -> RunTimings:
    t = RunTimings(t_request=100.0, t_prefill_start=100.001, n_prompt=n_prompt)
    t.t_prefill_end = t.t_prefill_start + prefill_s
    t.t_first_token = t.t_prefill_end + 0.0005
    t.token_ms = list(token_ms)
    t.n_gen = len(token_ms) + 1
    t.t_end = t.t_first_token + sum(token_ms) / 1e3
    return t


@pytest.fixture
def model(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 60)
    return ModelInfo(path=str(f), size_bytes=64, model_type="llama ?B Q4_0", bits_per_weight=4.5)


def test_profile_from_repetitions_is_valid_and_aggregated(model):
    runs = [run(0.100, [10.0, 10.0, 10.0]), run(0.050, [5.0, 5.0, 5.0]), run(0.200, [20.0, 20.0, 40.0])]
    p = build_profile(runs, model=model, device=DEVICE, n_threads=2, n_ctx=128, load_ms=12.5, warmup=1,
                      llama_cpp_version="0.3.36 (test)")
    validate_profile(p)
    assert p["repetitions"] == 3 and p["warmup"] == 1 and p["n_gen"] == 4 and p["n_prompt"] == 10
    assert p["prefill_tok_s"] == pytest.approx(100.0)  # median of 100, 200, 50
    assert (p["prefill_tok_s_min"], p["prefill_tok_s_max"]) == (pytest.approx(50.0), pytest.approx(200.0))
    assert p["decode_tok_s"] == pytest.approx(100.0)  # median of 100, 200, 37.5
    assert p["decode_tok_s_min"] == pytest.approx(3 / 80 * 1e3)
    assert p["token_ms"] == [20.0, 20.0, 40.0]  # the last repetition
    all_ms = [10.0] * 3 + [5.0] * 3 + [20.0, 20.0, 40.0]
    assert p["token_ms_p90"] == pytest.approx(percentile(all_ms, 90))
    assert p["model_sha256"] == hashlib.sha256(b"GGUF" + b"\0" * 60).hexdigest()
    assert p["ttft_ms"] == pytest.approx(101.5, abs=0.01)
    assert "decode 100.0 tok/s" in one_line(p)


def test_schema_rejects_what_fe_bench_must_not_write(model):
    p = build_profile([run(0.1, [1.0, 2.0])], model=model, device=DEVICE, n_threads=2, n_ctx=64, load_ms=1.0,
                      llama_cpp_version="x")
    for mutate in (lambda d: d.pop("ttft_ms"), lambda d: d.update(extra=1), lambda d: d.update(emulated="no"),
                   lambda d: d["device"].pop("affinity"), lambda d: d.update(token_ms=[1.0, "2"]),
                   lambda d: d.update(schema_version=2), lambda d: d.update(decode_tok_s=float("nan"))):
        bad = copy.deepcopy(p)
        mutate(bad)
        with pytest.raises(ProfileSchemaError):
            validate_profile(bad)


def test_build_profile_needs_a_run(model):
    with pytest.raises(ValueError):
        build_profile([], model=model, device=DEVICE, n_threads=1, n_ctx=1, load_ms=0.0, llama_cpp_version="x")
