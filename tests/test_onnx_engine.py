"""OnnxEngine: same interface as the GGUF Engine (streaming, stop, cancel, close) and a valid profile."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from finllm_edge.errors import ContextOverflowError, FinLLMEdgeError, InvalidArgumentError
from finllm_edge.onnx_engine import OnnxEngine
from finllm_edge.profile import validate_profile
from finllm_edge_convert import onnx_checks
from finllm_edge_convert.onnx_export import export_onnx
from onnx_support import smollm2_hf_dir

pytestmark = [pytest.mark.convert, pytest.mark.slow]
PROMPT = "What is a bond? Answer:"


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    out = tmp_path_factory.mktemp("smol") / "onnx-int4"
    export_onnx(smollm2_hf_dir(), out, checks=False)
    return out


@pytest.fixture(scope="module")
def engine(smol):
    with OnnxEngine(smol, n_threads=2) as eng:
        yield eng


def test_streaming_equals_greedy_tokens(engine, smol):
    pieces = list(engine.generate(PROMPT, max_tokens=20))
    assert len(pieces) > 1
    tokens = onnx_checks.onnx_greedy(smol, engine.tokenize(PROMPT), 20, n_threads=2)
    assert "".join(pieces) == engine.detokenize(tokens)
    assert engine.last_profile["n_gen"] == 20


def test_profile_valid_and_complete(engine, smol):
    "".join(engine.generate(PROMPT, max_tokens=12))
    p = validate_profile(engine.last_profile)
    import hashlib

    assert p["model_sha256"] == hashlib.sha256((smol / "model.onnx").read_bytes()).hexdigest()
    assert p["model_type"] == "onnx-int4" and 4.9 < p["bits_per_weight"] < 5.2
    assert p["llama_cpp_version"].startswith("n/a (onnxruntime-genai ")
    assert p["tool"] == "finllm_edge.OnnxEngine"
    assert p["n_threads"] == 2 and p["n_prompt"] == len(engine.tokenize(PROMPT)) and p["n_gen"] == 12
    assert len(p["token_ms"]) == 11 and p["token_ms_p50"] <= p["token_ms_p90"] <= p["token_ms_p99"]
    assert p["ttft_ms"] > 0 and p["decode_tok_s"] > 0 and p["prefill_tok_s"] > 0 and p["load_ms"] > 0
    assert p["e2e_ms"] >= p["ttft_ms"] and p["peak_rss_mb"] > 50
    assert p["device"]["cores_total"] >= 1 and p["model_size_bytes"] > 80e6


def test_stop_string_cuts_output(engine):
    full = "".join(engine.generate(PROMPT, max_tokens=30))
    stop = full.strip().split()[2]  # a word inside the greedy answer
    cut = "".join(engine.generate(PROMPT, max_tokens=30, stop=[stop]))
    assert cut == full[: full.index(stop)]
    assert engine.last_profile["n_gen"] < 30


def test_break_stops_generation(engine):
    for i, _ in enumerate(engine.generate("Write a long essay about inflation.", max_tokens=100)):
        if i == 2:
            break
    assert engine.last_profile["n_gen"] <= 8  # a few tokens can decode to no text yet
    "".join(engine.generate(PROMPT, max_tokens=3))  # the engine is free again


def test_cancel_from_another_thread(engine):
    it = engine.generate("Write a long essay about inflation.", max_tokens=200)
    next(it)
    threading.Thread(target=engine.cancel).start()
    rest = list(it)
    assert engine.last_profile["n_gen"] < 200 and len(rest) < 20


def test_one_generation_at_a_time(engine):
    it = engine.generate(PROMPT, max_tokens=5)
    next(it)
    with pytest.raises(FinLLMEdgeError, match="already generating"):
        next(engine.generate(PROMPT, max_tokens=5))
    list(it)


def test_context_overflow_and_full_context_as_in_the_core(engine):
    # The same contract as Engine: a prompt that does not fit is refused up front; a prompt that fits
    # generates until the context is full and ends with 'length'.
    long_prompt = " bond yields rose" * engine.n_ctx
    with pytest.raises(ContextOverflowError, match="n_ctx"):
        engine.generate(long_prompt, max_tokens=4)
    n_prompt = len(engine.tokenize(PROMPT))
    stream = engine.generate(PROMPT, max_tokens=engine.n_ctx, ignore_eos=True)
    list(stream)
    assert stream.finish_reason == "length" and n_prompt + len(stream.tokens) == engine.n_ctx


def test_options_are_checked_by_the_core(engine):
    with pytest.raises(InvalidArgumentError, match="top_p"):
        engine.generate(PROMPT, max_tokens=2, temperature=0.5, top_p=1.5)
    with pytest.raises(InvalidArgumentError, match="max_tokens"):
        engine.generate(PROMPT, max_tokens=-1)
    with pytest.raises(InvalidArgumentError, match="min_p"):
        engine.generate(PROMPT, max_tokens=2, min_p=0.1)
    empty = engine.generate(PROMPT, max_tokens=0)
    assert list(empty) == [] and empty.finish_reason == "length"


def test_sampling_is_seeded_and_low_temperature_is_greedy(engine):
    greedy = "".join(engine.generate(PROMPT, max_tokens=12))
    cold = "".join(engine.generate(PROMPT, max_tokens=12, temperature=1e-4, top_k=5, top_p=1.0))
    assert cold == greedy
    a = "".join(engine.generate(PROMPT, max_tokens=12, temperature=0.8, seed=7))
    b = "".join(engine.generate(PROMPT, max_tokens=12, temperature=0.8, seed=7))
    assert a == b


def test_stream_object_and_chat(engine):
    stream = engine.chat([{"role": "user", "content": "What is a bond?"}], max_tokens=8)
    with pytest.raises(FinLLMEdgeError, match="not finished"):
        _ = stream.profile
    text = "".join(stream)
    assert stream.text == text and stream.finish_reason in ("length", "stop")
    assert stream.profile is engine.last_profile or stream.profile["n_gen"] == engine.last_profile["n_gen"]
    assert "<|im_start|>assistant" in engine.format_chat([{"role": "user", "content": "hi"}])


def test_benchmark_profile(engine):
    p = validate_profile(engine.benchmark(n_prompt=16, n_gen=8, repetitions=2, warmup=1))
    assert (p["n_prompt"], p["n_gen"], p["repetitions"], p["warmup"]) == (16, 8, 2, 1)
    assert p["decode_tok_s_min"] <= p["decode_tok_s"] <= p["decode_tok_s_max"]


def test_close_is_idempotent(smol):
    eng = OnnxEngine(smol, n_threads=1)
    eng.close()
    eng.close()
    with pytest.raises(FinLLMEdgeError, match="closed"):
        eng.generate(PROMPT)


def test_runtime_imports_without_onnxruntime_genai():
    code = ("import sys; sys.modules['onnxruntime_genai'] = None\n"
            "import finllm_edge, finllm_edge.onnx_engine\n"
            "from finllm_edge.errors import ModelNotFoundError\n"
            "try:\n    finllm_edge.onnx_engine._og()\nexcept ModelNotFoundError as e:\n    print('ok', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("ok") and "pip install onnxruntime-genai" in out
