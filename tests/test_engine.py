"""Engine on the embedded SmolLM2-135M-Instruct: streaming, stops, cancellation, errors, profiles.

Few tokens per test; one shared Engine. Marked slow (needs the model), runs in CI.
"""

import hashlib
import threading
import time

import pytest

from finllm_edge import ContextOverflowError, CorruptModelError, ModelNotFoundError, _native, default_model_path
from finllm_edge.engine import Engine, SamplingOptions
from finllm_edge.errors import EngineBusyError, FinLLMEdgeError
from finllm_edge.profile import validate_profile

PROMPT = "The three main risks of a leveraged buyout are"
GREEDY = SamplingOptions(temperature=0.0)


@pytest.fixture(scope="module")
def engine():
    with Engine(n_ctx=512, seed=7) as e:
        yield e


@pytest.mark.slow
def test_streaming_equals_non_streaming_greedy(engine):
    stream = engine.generate(PROMPT, 24, sampling=GREEDY)
    pieces = list(stream)
    assert len(pieces) >= 5 and all(isinstance(p, str) and p for p in pieces)
    done = engine.complete(PROMPT, 24, sampling=GREEDY)
    assert "".join(pieces) == done.text == stream.text
    assert stream.tokens == done.tokens and len(done.tokens) == 24
    assert stream.finish_reason == done.finish_reason == "length"


@pytest.mark.slow
def test_utf8_split_across_tokens_is_reassembled(engine):
    # Byte-level BPE splits many non-ASCII characters over several tokens: each streamed piece
    # must still be whole text, and the join must equal one-shot detokenization.
    text = "Le bénéfice net a augmenté de 5 € ; 利润增长。 📈"
    tokens = engine.tokenize(text, add_special=False)
    assert len(tokens) > len(text.encode()) // 4  # sanity: multi-byte characters spread over tokens
    stream = engine.generate(text, 16, sampling=GREEDY)
    joined = "".join(stream)
    assert "\ufffd" not in joined or "\ufffd" in engine.detokenize(stream.tokens)
    assert joined == engine.detokenize(stream.tokens)


@pytest.mark.slow
def test_stop_string_ends_generation_in_both_paths(engine):
    full = engine.complete(PROMPT, 24, sampling=GREEDY).text
    words = full.split()
    stop = " " + words[3]
    expected = full[: full.find(stop)]
    stream = engine.generate(PROMPT, 24, sampling=GREEDY, stop=[stop])
    assert "".join(stream) == expected
    assert stream.finish_reason == "stop"
    done = engine.complete(PROMPT, 24, sampling=GREEDY, stop=stop)
    assert done.text == expected and done.finish_reason == "stop"
    assert len(done.tokens) < 24


@pytest.mark.slow
def test_cancel_from_another_thread_stops_within_a_few_tokens(engine):
    stream = engine.generate(PROMPT, 200, sampling=GREEDY, ignore_eos=True)
    got = []
    at_cancel = {}
    fifth = threading.Event()

    def canceller():
        fifth.wait(timeout=60)
        at_cancel["n"] = len(stream.tokens)
        engine.cancel()

    t = threading.Thread(target=canceller)
    t.start()
    for piece in stream:
        got.append(piece)
        if len(got) == 5:
            fifth.set()
    t.join()
    assert stream.finish_reason == "cancelled"
    assert len(stream.tokens) - at_cancel["n"] <= 3
    assert len(stream.tokens) < 20


@pytest.mark.slow
def test_breaking_out_of_the_iterator_frees_the_engine(engine):
    stream = engine.generate(PROMPT, 100, sampling=GREEDY, ignore_eos=True)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    # The stream is still open (referenced, not finished): a second generation is an error, never
    # a silent cancel of the first.
    with pytest.raises(EngineBusyError, match="already generating"):
        engine.complete(PROMPT, 4, sampling=GREEDY)
    assert stream.finish_reason is None
    stream.close()
    assert stream.finish_reason == "cancelled" and len(stream.tokens) == 3
    again = engine.complete(PROMPT, 4, sampling=GREEDY)
    assert len(again.tokens) == 4
    # Dropping an unfinished stream ends it too.
    dropped = engine.generate(PROMPT, 100, sampling=GREEDY, ignore_eos=True)
    next(dropped)
    del dropped
    assert len(engine.complete(PROMPT, 2, sampling=GREEDY).tokens) == 2


@pytest.mark.slow
def test_engine_refuses_a_second_generation_while_another_thread_streams(engine):
    stream = engine.generate(PROMPT, 50, sampling=GREEDY, ignore_eos=True)
    entered, release = threading.Event(), threading.Event()

    def consume():
        for i, _ in enumerate(stream):
            if i == 1:
                entered.set()
                release.wait(timeout=60)

    t = threading.Thread(target=consume)
    t.start()
    assert entered.wait(timeout=60)
    try:
        with pytest.raises(FinLLMEdgeError, match="already generating"):
            engine.complete(PROMPT, 2, sampling=GREEDY)
    finally:
        engine.cancel()
        release.set()
        t.join()
    assert stream.finish_reason == "cancelled" and len(stream.tokens) <= 4
    assert len(engine.complete(PROMPT, 2, sampling=GREEDY).tokens) == 2


def _long_prompt(engine, n_tokens):
    phrase = " revenue growth and operating margin widened as costs fell"
    per = len(engine.tokenize(phrase, add_special=False))
    return phrase * (n_tokens // per)


@pytest.mark.slow
def test_cancel_during_a_long_prefill_is_fast_and_close_waits_for_the_step():
    with Engine(n_ctx=4096, n_batch=2048, n_threads=1) as eng:
        prompt = _long_prompt(eng, 3000)
        stream = eng.generate(prompt, 8, sampling=GREEDY)
        started, out = threading.Event(), {}

        def consume():
            started.set()
            out["pieces"] = list(stream)
            out["t_end"] = time.perf_counter()

        t = threading.Thread(target=consume)
        t.start()
        started.wait(10)
        time.sleep(0.3)  # well inside the prefill (3000 tokens on one thread take seconds)
        with pytest.raises(EngineBusyError, match="while it generates"):
            eng.close()
        t_cancel = time.perf_counter()
        eng.cancel()
        t.join(30)
        assert not t.is_alive()
        assert stream.finish_reason == "cancelled" and stream.tokens == [] and out["pieces"] == []
        assert out["t_end"] - t_cancel < 0.25, out["t_end"] - t_cancel  # measured ~ms; generous on a busy host
        eng.close()
        assert eng.closed


@pytest.mark.slow
def test_context_overflow_is_a_clear_error():
    with Engine(n_ctx=64) as small:
        n_ctx = small.n_ctx  # llama.cpp may round the context up (to 256 on CPU)
        assert 64 <= n_ctx <= 512
        phrase = " revenue growth and margin"
        per = len(small.tokenize(phrase, add_special=False))
        long_prompt = phrase * (n_ctx // per + 2)
        with pytest.raises(ContextOverflowError, match="n_ctx"):
            small.generate(long_prompt, 8)
        with pytest.raises(ContextOverflowError):
            small.complete(long_prompt, 8)
        # a prompt that fits, generating past the end of the context, stops with reason "length"
        fitting = phrase * ((n_ctx - 12) // per)
        n_prompt = len(small.tokenize(fitting))
        stream = small.generate(fitting, 500, ignore_eos=True)
        list(stream)
        assert stream.finish_reason == "length"
        assert n_prompt + len(stream.tokens) == n_ctx + 1  # the last token is sampled, never decoded
        assert len(small.complete("Cash flow", 3).tokens) <= 3  # still usable afterwards


@pytest.mark.slow
def test_profile_is_schema_valid_and_consistent(engine):
    stream = engine.generate(PROMPT, 12, sampling=GREEDY, ignore_eos=True)
    list(stream)
    p = validate_profile(stream.profile)
    assert p is engine.last_profile or p == engine.last_profile
    assert p["tool"] == "finllm_edge.Engine" and p["emulated"] is False
    assert p["variant"] == _native.lib().variant and p["variant"].startswith("x86-64-")
    assert p["n_gen"] == 12 and len(p["token_ms"]) == 11 and p["repetitions"] == 1
    assert p["n_prompt"] == len(engine.tokenize(PROMPT))
    assert p["ttft_ms"] > 0 and p["decode_tok_s"] > 0 and p["prefill_tok_s"] > 0
    assert p["token_ms_p50"] <= p["token_ms_p90"] <= p["token_ms_p99"] <= max(p["token_ms"]) + 1e-6
    assert p["e2e_ms"] >= p["ttft_ms"]
    path = default_model_path()
    assert p["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert p["model_size_bytes"] == path.stat().st_size
    assert 4.5 < p["bits_per_weight"] < 6.5 and "Q4_1" in p["model_type"]
    assert p["device"]["cores_used"] and p["peak_rss_mb"] > 50
    assert p["llama_cpp_version"].startswith("0.3.36")


@pytest.mark.slow
def test_benchmark_profile(engine):
    p = engine.benchmark(n_prompt=16, n_gen=6, repetitions=2, warmup=0)
    validate_profile(p)
    assert (p["n_prompt"], p["n_gen"], p["repetitions"], p["warmup"]) == (16, 6, 2, 0)
    assert len(p["token_ms"]) == 5
    assert p["decode_tok_s_min"] <= p["decode_tok_s"] <= p["decode_tok_s_max"]


@pytest.mark.slow
def test_chat_uses_the_models_own_template(engine):
    msgs = [{"role": "user", "content": "What is EBITDA?"}]
    prompt = engine.format_chat(msgs)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert prompt.endswith("<|im_start|>user\nWhat is EBITDA?<|im_end|>\n<|im_start|>assistant\n")
    stream = engine.chat(msgs, 12, sampling=GREEDY)
    text = "".join(stream)
    assert text.strip() and "<|im_" not in text
    # the special tokens were parsed as special tokens, not as text
    n_special = engine.tokenize(prompt, add_special=False, parse_special=True)
    n_text = engine.tokenize(prompt, add_special=False, parse_special=False)
    assert stream.profile["n_prompt"] == len(n_special) < len(n_text)


@pytest.mark.slow
def test_several_engines_in_one_process(engine):
    with Engine(n_ctx=256) as other:
        a = other.complete(PROMPT, 8, sampling=GREEDY)
    b = engine.complete(PROMPT, 8, sampling=GREEDY)
    assert a.text == b.text and other.closed
    other.close()  # idempotent
    with pytest.raises(FinLLMEdgeError, match="closed"):
        other.generate(PROMPT, 2)


def test_missing_model_is_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="nope.gguf.*No such file"):
        Engine(tmp_path / "nope.gguf")


def test_text_file_renamed_gguf_is_corrupt(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("this is not a model\n")
    with pytest.raises(CorruptModelError, match="not a GGUF file: magic"):
        Engine(bad)


@pytest.mark.slow
def test_truncated_gguf_is_corrupt_naming_the_field(tmp_path):
    bad = tmp_path / "truncated.gguf"
    with open(default_model_path(), "rb") as f:
        bad.write_bytes(f.read(64 * 1024))
    with pytest.raises(CorruptModelError, match="invalid GGUF field '.+'"):
        Engine(bad)


@pytest.mark.parametrize("make,kwargs,needle", [
    (Engine, {"n_ctx": 0}, "n_ctx is 0"),
    (Engine, {"n_ctx": 1 << 25}, "n_ctx = 33554432 is out of range"),
    (Engine, {"n_threads": 10_000}, "the CPUs online"),
    (Engine, {"n_ctx": -1}, "n_ctx = -1 is out of range"),       # does not fit the C field
    (Engine, {"flash_attn": "yes"}, "use True or False"),
    ("Scheduler", {"n_slots": 65}, "n_slots = 65 is out of range: use 1..64"),
    ("Scheduler", {"n_batch": 8, "n_batch_busy": 16}, "n_batch_busy"),
    ("Scheduler", {"p99_token_ms": -1.0}, "p99_token_ms"),
    ("Scheduler", {"max_queued": 1.5}, "max_queued = 1.5 must be an integer"),
])
def test_bad_parameters_are_refused_before_the_model_is_read(tmp_path, make, kwargs, needle):
    """The core's ranges (fe_session_params_check / fe_scheduler_params_check) refuse them first: the
    model path does not exist, and the error is about the parameter, not the file."""
    from finllm_edge import Scheduler
    from finllm_edge.errors import InvalidArgumentError

    cls = Scheduler if make == "Scheduler" else make
    with pytest.raises(InvalidArgumentError, match=needle):
        cls(tmp_path / "missing.gguf", **kwargs)


@pytest.mark.slow
def test_token_ids_that_do_not_fit_int32_are_refused(engine):
    """One conversion of token ids to the core's int32 (_native.token_array) for every binding call."""
    from finllm_edge import Scheduler
    from finllm_edge.errors import InvalidArgumentError

    with Scheduler(n_slots=1, n_ctx=64, n_threads=1) as sched:
        for call in (engine.generate_tokens, engine.detokenize, sched.generate_tokens):
            with pytest.raises(InvalidArgumentError, match="must be integers"):
                call([1, "2"])
            with pytest.raises(InvalidArgumentError, match="must be integers"):
                call([True])
            with pytest.raises(InvalidArgumentError, match="outside the vocabulary"):
                call([1 << 40])
