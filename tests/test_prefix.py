"""Prefix reuse and saved prompt state through the Python binding (the rules are the core's:
native/tests/test_prefix.c tests them in C).

- reuse gives the same tokens as an Engine without it (generate and chat, greedy and seeded,
  partial overlaps, after close()/cancel of a stream, after a stop string), and the profile says
  how many prompt tokens were reused;
- a state file saved here is loaded by a new Engine in a new process: same tokens, the prefix is
  reused, TTFT drops;
- every corrupt or foreign state file is refused with StateFileError naming the problem.
Marked slow (needs the model and the host build), runs in CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from finllm_edge import ContextOverflowError, ModelNotFoundError, default_model_path
from finllm_edge.engine import Engine
from finllm_edge.errors import CancelledError, CorruptModelError, EngineBusyError, InvalidArgumentError, StateFileError
from finllm_edge.profile import validate_profile

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = ("You are a careful financial analyst at a regional bank. Answer in two sentences, cite the "
          "numbers you use, and say when the data is not enough. ")
# ~300 tokens of system prompt, as in the measurement
LONG_SYSTEM = SYSTEM + " ".join(
    f"Rule {i}: the loan-to-value ratio of segment {i} must stay below {60 + i}% and its coverage above "
    f"{1 + i / 10:.1f}x." for i in range(12))
HEADER_SIZE = 232  # state file format version 2 (the adapter set)


def _chat(system: str, *turns: str) -> list[dict]:
    msgs = [{"role": "system", "content": system}]
    for i, t in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    return msgs


@pytest.fixture(scope="module")
def engines():
    with Engine(n_ctx=1024, n_threads=1) as reuse, Engine(n_ctx=1024, n_threads=1, prefix_reuse=False) as fresh:
        yield reuse, fresh


def _same(reuse: Engine, fresh: Engine, call: str, arg, **kw) -> tuple[list[int], int]:
    a = getattr(reuse, call)(arg, **kw)
    list(a)
    b = getattr(fresh, call)(arg, **kw)
    list(b)
    assert a.tokens == b.tokens, f"{call}: reuse gave other tokens than a fresh prefill"
    assert a.finish_reason == b.finish_reason
    assert b.profile["n_prompt_reused"] == 0
    return a.tokens, a.profile["n_prompt_reused"]


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"temperature": 0.8, "seed": 11, "repeat_penalty": 1.2}])
def test_reuse_gives_the_same_tokens(engines, sampling):
    reuse, fresh = engines
    reuse.reset()
    q1 = f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is a covenant?<|im_end|>\n" \
         "<|im_start|>assistant\n"
    q2 = q1.replace("What is a covenant?", "What is net interest margin?")
    _, r = _same(reuse, fresh, "generate", q1, max_tokens=12, parse_special=True, **sampling)
    assert r == 0
    _, r = _same(reuse, fresh, "generate", q2, max_tokens=12, parse_special=True, **sampling)
    assert 20 < r < len(reuse.tokenize(q2, parse_special=True))  # the shared system prompt
    _, r = _same(reuse, fresh, "generate", q2, max_tokens=12, parse_special=True, **sampling)
    assert r == len(reuse.tokenize(q2, parse_special=True)) - 2   # all cached: the last 2 evaluated again
    # a chat over turns: each turn reuses the earlier prompt
    msgs = _chat(SYSTEM, "What is a covenant?")
    answer, r = _same(reuse, fresh, "chat", msgs, max_tokens=12, **sampling)
    msgs += [{"role": "assistant", "content": reuse.detokenize(answer)}, {"role": "user", "content": "Give one."}]
    _, r2 = _same(reuse, fresh, "chat", msgs, max_tokens=12, **sampling)
    assert r2 > r
    # the profile is schema-valid and says what was reused
    prof = reuse.last_profile
    validate_profile(prof)
    assert prof["n_prompt_reused"] == r2 and prof["n_prompt"] > r2


@pytest.mark.slow
def test_reuse_after_close_stop_string_and_overflow(engines):
    reuse, fresh = engines
    prompt = f"{SYSTEM}\nQuestion: what drives bank deposit costs? Answer:"
    s = reuse.generate(prompt, 40)
    next(iter(s))
    s.close()  # abandoned after the first piece
    _same(reuse, fresh, "generate", prompt, max_tokens=10)
    s = reuse.generate(prompt, 40, stop=[" "])
    list(s)
    assert s.finish_reason == "stop"
    _same(reuse, fresh, "generate", prompt, max_tokens=10, temperature=0.7, seed=3)
    with pytest.raises(ContextOverflowError):
        reuse.generate("word " * 1200, 4)  # does not fit: refused before any work
    _, r = _same(reuse, fresh, "generate", prompt, max_tokens=10)
    assert r > 20


def _save_in(path: Path) -> list[int]:
    with Engine(n_ctx=1024, n_threads=1) as e:
        n = e.save_state(path, messages=_chat(LONG_SYSTEM))
        assert n > 250
        return e.cached_tokens()


CHILD = textwrap.dedent("""
    import json, sys, time
    from finllm_edge.engine import Engine
    state, reuse, msgs = sys.argv[1], sys.argv[2] == "1", json.loads(sys.argv[3])
    with Engine(n_ctx=1024, n_threads=1, prefix_reuse=reuse) as e:
        if state != "-":
            e.load_state(state)
        s = e.chat(msgs, max_tokens=12)
        list(s)
        print(json.dumps({"tokens": s.tokens, "ttft_ms": s.profile["ttft_ms"],
                          "reused": s.profile["n_prompt_reused"], "n_prompt": s.profile["n_prompt"]}))
""")


def _child(state: str, reuse: bool, msgs: list[dict]) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, state, "1" if reuse else "0", json.dumps(msgs)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_state_file_round_trip_in_a_new_process(tmp_path):
    path = tmp_path / "system.festate"
    prefix = _save_in(path)
    msgs = _chat(LONG_SYSTEM, "What is a covenant?")
    loaded = _child(str(path), True, msgs)
    cold = _child("-", False, msgs)
    assert loaded["tokens"] == cold["tokens"]
    assert loaded["reused"] == len(prefix) and cold["reused"] == 0
    assert loaded["ttft_ms"] < cold["ttft_ms"], (loaded, cold)


def _variants(orig: bytes) -> dict[str, bytes]:
    n_tokens = struct.unpack_from("<I", orig, 152)[0]
    v = {"empty": b"", "magic only": orig[:8]}
    for cut in (100, HEADER_SIZE, HEADER_SIZE + 4 * n_tokens - 2, len(orig) // 2, len(orig) - 1):
        v[f"truncated at {cut}"] = orig[:cut]
    for at in (12, 40, 150, HEADER_SIZE + 5, len(orig) // 3, len(orig) - 10):
        b = bytearray(orig)
        b[at] ^= 0x01
        v[f"bit flipped at {at}"] = bytes(b)
    v["wrong magic"] = b"GGUF" + orig[4:]
    v["wrong version"] = orig[:8] + struct.pack("<I", 9) + orig[12:]
    v["huge token count"] = orig[:152] + struct.pack("<I", 0xFFFFFFF0) + orig[156:]
    v["huge payload size"] = orig[:160] + struct.pack("<Q", 1 << 62) + orig[168:]
    v["appended bytes"] = orig + b"\0" * 64
    # hand-made: a consistent header and a valid checksum over a made-up KV payload
    body = orig[:HEADER_SIZE + 4 * n_tokens]
    payload = os.urandom(4096)
    body = body[:160] + struct.pack("<Q", len(payload)) + body[168:] + payload
    v["hand-made payload, valid checksum"] = body + hashlib.sha256(body).digest()
    zero = body[:HEADER_SIZE + 4 * n_tokens] + b"\0" * 4096
    v["zero payload, valid checksum"] = zero + hashlib.sha256(zero).digest()
    return v


@pytest.mark.slow
def test_corrupt_and_foreign_state_files_are_refused(tmp_path, engines):
    reuse, _ = engines
    good = tmp_path / "good.festate"
    reuse.save_state(good, prompt=SYSTEM)
    orig = good.read_bytes()
    assert orig[:8] == b"FESTATE\0"
    bad = tmp_path / "bad.festate"
    for name, data in _variants(orig).items():
        bad.write_bytes(data)
        with pytest.raises(StateFileError) as exc:
            reuse.load_state(bad)
        assert isinstance(exc.value, CorruptModelError)
        assert "refused" in str(exc.value), name
        assert reuse.cached_tokens() == [], name  # nothing half-trusted stays
    # another llama.cpp build or CPU variant (a consistent file with a valid checksum)
    body = bytearray(orig[:-32])
    body[80:144] = b"0.3.35 (0123456789ab); variant armv8-a".ljust(64, b"\0")
    bad.write_bytes(bytes(body) + hashlib.sha256(bytes(body)).digest())
    with pytest.raises(StateFileError, match="made by llama.cpp 0.3.35"):
        reuse.load_state(bad)
    with pytest.raises(ModelNotFoundError):
        reuse.load_state(tmp_path / "missing.festate")
    assert reuse.load_state(good) == len(reuse.tokenize(SYSTEM))


@pytest.mark.slow
def test_state_of_another_model_is_refused(tmp_path, engines):
    from finllm_edge.lab.aarch64 import smollm2_q4_0

    reuse, _ = engines
    path = tmp_path / "q4_0.festate"
    with Engine(smollm2_q4_0(), n_ctx=1024, n_threads=1) as other, \
            Engine(smollm2_q4_0(), n_ctx=1024, n_threads=1, prefix_reuse=False) as other_fresh:
        other.save_state(path, prompt=SYSTEM)
        assert other.load_state(path) > 0  # fine for the model that made it
        # Q4_0 weights are repacked for other CPU kernels: reuse is exact there too
        for q in ("What is a covenant?", "What is net interest margin?"):
            _same(other, other_fresh, "chat", _chat(SYSTEM, q), max_tokens=10)
        assert other.last_profile["n_prompt_reused"] > 20
    with pytest.raises(StateFileError, match="another model"):
        reuse.load_state(path)
    assert default_model_path().exists()


@pytest.mark.slow
def test_flash_attention_reuse_is_exact_and_coarser(tmp_path):
    """flash_attn=True: reuse still gives the same tokens as no reuse (long prompts on the tiled
    kernel keep their last 64 tokens for evaluation), and a state file remembers the setting."""
    with pytest.raises(InvalidArgumentError, match="flash_attn"):
        Engine(n_ctx=256, flash_attn="yes")
    with Engine(n_ctx=1024, n_threads=1, flash_attn=True) as reuse, \
            Engine(n_ctx=1024, n_threads=1, flash_attn=True, prefix_reuse=False) as fresh:
        q1 = _chat(LONG_SYSTEM, "What is a covenant?")
        q2 = _chat(LONG_SYSTEM, "What is net interest margin?")
        _same(reuse, fresh, "chat", q1, max_tokens=10)
        _, r = _same(reuse, fresh, "chat", q2, max_tokens=10, temperature=0.8, seed=5)
        n2 = reuse.count_chat_tokens(q2)
        assert 0 < r <= n2 - 64
        _, r = _same(reuse, fresh, "chat", q2, max_tokens=10)
        assert r == n2 - 64  # all cached: the last 64 are evaluated again
        state = tmp_path / "fa.festate"
        reuse.save_state(state, prompt=LONG_SYSTEM)
        assert reuse.load_state(state) == len(reuse.tokenize(LONG_SYSTEM))
    with Engine(n_ctx=1024, n_threads=1) as plain:
        with pytest.raises(StateFileError, match="flash attention on"):
            plain.load_state(state)


@pytest.mark.slow
def test_reuse_generated_reuses_the_models_own_answer(engines):
    """reuse_generated=True: a chat that sends back the model's own answer evaluates only the new
    message (the generated tokens' K/V are reused, as llama-cpp-python does); off (the default),
    the answer is evaluated again so the output stays exact."""
    exact, _ = engines
    with pytest.raises(InvalidArgumentError, match="reuse_generated"):
        Engine(n_ctx=256, reuse_generated=1)
    with Engine(n_ctx=1024, n_threads=1, reuse_generated=True) as loose, \
            Engine(n_ctx=1024, n_threads=1, reuse_generated=True, prefix_reuse=False) as off:
        turn1 = _chat(SYSTEM, "What is a covenant?")
        got = {}
        for name, eng in (("exact", exact), ("loose", loose), ("off", off)):
            eng.reset()
            a = eng.chat(turn1, max_tokens=20)
            answer = "".join(a)
            n1 = a.profile["n_prompt"]
            turn2 = _chat(SYSTEM, "What is a covenant?", answer, "And a negative covenant?")
            b = eng.chat(turn2, max_tokens=8)
            list(b)
            got[name] = (n1, b.profile["n_prompt_reused"], len(a.tokens), b.profile["n_prompt"])
        n1, reused, n_answer, n2 = got["exact"]
        assert reused == n1  # the earlier prompt only
        n1, reused, n_answer, n2 = got["loose"]
        # the earlier prompt + the answer tokens that were decoded (the last sampled one was not),
        # as far as the template renders the answer with the same tokens
        assert n1 + n_answer // 2 < reused < n2, got
        assert got["off"][1] == 0


@pytest.mark.slow
@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"temperature": 0.8, "seed": 7, "repeat_penalty": 1.2}])
def test_settle_makes_the_answer_reusable_and_stays_exact(engines, sampling):
    """settle() evaluates the answer again as a prompt: the next turn reuses it (evaluates only the
    new message, as reuse_generated does) and its tokens still equal an Engine without reuse."""
    exact, fresh = engines
    exact.reset()
    turn1 = _chat(SYSTEM, "What is a covenant?")
    a = exact.chat(turn1, max_tokens=24, **sampling)
    answer = "".join(a)
    n1 = a.profile["n_prompt"]
    n_cached = len(exact.cached_tokens())
    assert n_cached > n1  # the decoded answer tokens
    before = exact.cached_tokens()
    assert exact.settle() == n_cached - n1  # the answer rows, none of the prompt's
    assert exact.cached_tokens() == before  # the same tokens, now reusable
    assert exact.settle() == 0  # nothing left to settle
    turn2 = _chat(SYSTEM, "What is a covenant?", answer, "And a negative covenant?")
    _, reused = _same(exact, fresh, "chat", turn2, max_tokens=12, **sampling)
    # the earlier prompt + the answer, as far as the template renders it with the same tokens
    assert n1 + (n_cached - n1) // 2 < reused < exact.count_chat_tokens(turn2), (n1, n_cached, reused)
    # without settle the same turn reuses the earlier prompt only
    exact.reset()
    list(exact.chat(turn1, max_tokens=24, **sampling))
    _, plain = _same(exact, fresh, "chat", turn2, max_tokens=12, **sampling)
    assert plain == n1


@pytest.mark.slow
def test_settle_is_refused_while_generating_and_can_be_cancelled(engines):
    exact, fresh = engines
    exact.reset()
    assert exact.settle() == 0  # an empty cache
    turn1 = _chat(SYSTEM, "What is a covenant?")
    s = exact.chat(turn1, max_tokens=200, ignore_eos=True)
    next(iter(s))
    with pytest.raises(EngineBusyError, match="request is running"):
        exact.settle()
    answer = "".join(s)
    n1 = s.profile["n_prompt"]
    stop = threading.Event()

    def keep_cancelling() -> None:
        while not stop.is_set():
            exact.cancel()
            time.sleep(0.0005)

    t = threading.Thread(target=keep_cancelling)
    t.start()
    try:
        with pytest.raises(CancelledError, match="settle"):
            exact.settle()
    finally:
        stop.set()
        t.join()
    assert n1 <= len(exact.cached_tokens()) < n1 + 199  # the prompt stays; the answer rows went
    turn2 = _chat(SYSTEM, "What is a covenant?", answer, "And a negative covenant?")
    _, reused = _same(exact, fresh, "chat", turn2, max_tokens=8)
    assert reused >= n1 - 2


@pytest.mark.slow
def test_declared_model_sha256_tags_and_checks_the_state(tmp_path, engines):
    """EngineOptions.model_sha256 (fe_model_set_sha256): the declared hash, not a hash of the file, is
    what a state file records and what loading checks; a malformed one is refused at once."""
    reuse, _ = engines
    declared = "ab" * 32
    path = tmp_path / "declared.festate"
    with Engine(n_ctx=1024, n_threads=1, model_sha256=declared.upper()) as e:  # either case
        n = e.save_state(path, prompt=SYSTEM)
    assert path.read_bytes()[16:80] == declared.encode()  # the header's model_sha256
    with Engine(n_ctx=1024, n_threads=1, model_sha256=declared) as e:
        assert e.load_state(path) == n
    with pytest.raises(StateFileError, match="another model"):
        reuse.load_state(path)  # this Engine knows the file's real hash
    for bad in ("xyz", "ab" * 31, "ab" * 32 + "0", "g" * 64, 123):
        with pytest.raises(InvalidArgumentError):
            Engine(n_ctx=64, n_threads=1, model_sha256=bad)
