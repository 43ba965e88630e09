"""finllm_edge.Scheduler: concurrent requests on one model through the Python binding of the core's
scheduler (the rules are the core's: native/tests/test_sched.c tests them in C, with 8 requests).

- requests read on several threads at once, with mixed prompt/answer lengths, greedy and seeded,
  one cancelled midway, give exactly the tokens and text of the same request run alone, and of an
  Engine with the same settings;
- the TokenStream contract the server relies on: text pieces, .completion (finish_reason, usage),
  .cancel(), .profile (a valid LatencyProfile);
- a full queue is EngineBusyError, bad parameters are InvalidArgumentError naming the field,
  close() while requests run ends them 'cancelled', stats() reports the scheduler.
Marked slow (needs the model and the host build), runs in CI.
"""

from __future__ import annotations

import threading
import time

import pytest

from finllm_edge import ContextOverflowError, Scheduler
from finllm_edge.engine import Engine
from finllm_edge.errors import EngineBusyError, FinLLMEdgeError, InvalidArgumentError
from finllm_edge.profile import validate_profile

PROMPTS = [
    ("The bond's coupon is", 24, {}),
    ("Explain what EBITDA measures and why analysts use it.", 10, {"temperature": 0.8, "seed": 7}),
    ("List three risks of holding long-dated government bonds:", 40, {}),
    ("Q: What is a stock split?\nA:", 16, {"temperature": 0.7, "seed": 3, "repeat_penalty": 1.2}),
    ("Inflation", 6, {}),
    ("Write a short note to a client about diversification across asset classes.", 32,
     {"temperature": 0.9, "seed": 99}),
]


@pytest.fixture(scope="module")
def sched():
    # a latency bound no shared CI machine passes: the batch grows to n_slots
    with Scheduler(n_slots=6, n_ctx=256, n_threads=1, p99_token_ms=1e6, n_batch_busy=16) as s:
        yield s


def _run(stream) -> tuple[list[int], str, str]:
    text = "".join(stream)
    return list(stream.tokens), text, stream.finish_reason


@pytest.mark.slow
def test_concurrent_requests_equal_solo_runs(sched):
    solo = [_run(sched.generate(p, n, **kw)) for p, n, kw in PROMPTS]
    results: dict[int, tuple] = {}
    streams = [sched.generate(p, n, **kw) for p, n, kw in PROMPTS]

    def read(i: int) -> None:
        s = streams[i]
        toks = []
        for _ in s:
            toks = list(s.tokens)
            if i == 2 and len(toks) >= 4:
                s.cancel()  # the others must not notice
        results[i] = (list(s.tokens), s.text, s.finish_reason)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert all(not t.is_alive() for t in threads)
    for i, (want, got) in enumerate(zip(solo, [results[i] for i in range(len(PROMPTS))])):
        if i == 2:
            assert got[2] == "cancelled"
            assert got[0] == want[0][: len(got[0])] and 4 <= len(got[0]) < len(want[0])
        else:
            assert got == want, f"request {i} differs when run with the others"
    # ... and equal a session's (an Engine with the same settings)
    with Engine(n_ctx=256, n_threads=1, prefix_reuse=False) as eng:
        for (p, n, kw), want in zip(PROMPTS, solo):
            assert _run(eng.generate(p, n, **kw)) == want
    st = sched.stats()
    assert st["peak_active"] >= 4  # they did run together (the batch doubles: 1, 2, 4, 6)
    assert st["cancelled"] >= 1 and st["failed"] == 0


@pytest.mark.slow
def test_one_thread_reads_every_stream_through_the_wakeup_fd(sched):
    """set_wakeup_fd + TokenStream.ready(): one thread waits on one fd for all requests and takes
    what each has without blocking; it gets the same tokens, text and finish reasons as iterating
    each stream, a cancel included. An Engine's stream cannot be polled (a clear error)."""
    import os
    import select

    solo = [_run(sched.generate(p, n, **kw)) for p, n, kw in PROMPTS]
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    sched.set_wakeup_fd(w)
    try:
        streams = [sched.generate(p, n, **kw) for p, n, kw in PROMPTS]
        texts = ["" for _ in streams]
        wakes = 0
        while not all(s.ended for s in streams):
            assert select.select([r], [], [], 60)[0], "no wake-up in 60 s while requests run"
            while True:
                try:
                    if not os.read(r, 4096):
                        break
                except BlockingIOError:
                    break
            wakes += 1
            for i, s in enumerate(streams):
                texts[i] += "".join(s.ready())
                if i == 2 and len(s.tokens) >= 4 and not s.ended:
                    s._steps.cancel()  # the scheduler's non-blocking cancel (what serve uses)
        assert wakes >= 2
    finally:
        sched.set_wakeup_fd(None)
        os.close(r)
        os.close(w)
    for i, (s, text, want) in enumerate(zip(streams, texts, solo)):
        assert text == s.text
        if i == 2:
            assert s.finish_reason == "cancelled" and s.tokens == want[0][: len(s.tokens)]
        else:
            assert (list(s.tokens), s.text, s.finish_reason) == want, i
    with Engine(n_ctx=64, n_threads=1) as eng, pytest.raises(FinLLMEdgeError, match="cannot be polled"):
        eng.generate("Inflation", 2).ready()


@pytest.mark.slow
def test_stream_contract_completion_usage_profile(sched):
    prompt = "The price of a bond falls when"
    s = sched.generate(prompt, 12, ignore_eos=True)
    with pytest.raises(FinLLMEdgeError, match="not finished"):
        _ = s.completion
    pieces = list(s)
    c = s.completion
    assert c.text == "".join(pieces) and c.finish_reason == "length"
    assert c.completion_tokens == 12 == len(c.tokens)
    assert c.prompt_tokens == len(sched.tokenize(prompt))
    prof = s.profile
    validate_profile(prof)
    assert prof["n_gen"] == 12 and prof["tool"] == "finllm_edge.Scheduler"
    done = sched.complete(prompt, 12, ignore_eos=True)
    assert done.text == c.text and done.prompt_tokens == c.prompt_tokens and done.completion_tokens == 12
    # chat and its token count, as the Engine counts them
    msgs = [{"role": "user", "content": "What is a dividend?"}]
    with Engine(n_ctx=256, n_threads=1) as eng:
        assert sched.count_chat_tokens(msgs) == eng.count_chat_tokens(msgs)
        assert sched.tokenize("a coupon") == eng.tokenize("a coupon")
    cs = sched.chat(msgs, 8)
    "".join(cs)
    assert cs.completion.prompt_tokens == sched.count_chat_tokens(msgs)
    # stop strings: cut before the stop string, finish 'stop'
    full = sched.complete("Count: 1, 2, 3,", 20).text
    if ", 6" in full:
        cut = sched.complete("Count: 1, 2, 3,", 20, stop=[", 6"])
        assert cut.text == full[: full.index(", 6")] and cut.finish_reason == "stop"


@pytest.mark.slow
def test_queue_full_bad_params_and_close_while_running():
    with pytest.raises(InvalidArgumentError, match="n_slots"):
        Scheduler(n_slots=0)
    with pytest.raises(InvalidArgumentError, match="p99_token_ms"):
        Scheduler(n_slots=1, n_ctx=64, p99_token_ms=0.0)
    with pytest.raises(InvalidArgumentError, match="n_batch_busy"):
        Scheduler(n_slots=1, n_ctx=64, n_batch=8, n_batch_busy=16)
    s = Scheduler(n_slots=1, n_ctx=128, n_threads=1, max_queued=2)
    try:
        with pytest.raises(InvalidArgumentError, match="temperature"):
            s.generate("x", 4, temperature=-1.0)
        with pytest.raises(ContextOverflowError, match="n_ctx = 128"):
            s.generate("word " * 400, 4)
        accepted, busy = [], 0
        for _ in range(6):
            try:
                accepted.append(s.generate("Interest rates and", 200, ignore_eos=True))
            except EngineBusyError as exc:
                assert "queue is full" in str(exc)
                busy += 1
        assert 2 <= len(accepted) <= 3 and busy == 6 - len(accepted)
        first = next(iter(accepted[0]))
        assert isinstance(first, str)
        assert s.stats()["rejected"] == busy
    finally:
        s.close()  # ends the running and the queued requests
    for st in accepted:
        list(st)
        assert st.finish_reason == "cancelled"
        assert st.completion.completion_tokens < 200
    with pytest.raises(FinLLMEdgeError, match="closed"):
        s.generate("x", 4)
    with pytest.raises(FinLLMEdgeError, match="closed"):
        s.stats()
    s.close()  # idempotent


@pytest.mark.slow
def test_submit_and_read_from_many_threads(sched):
    """Every call from any thread: 8 threads each submit and read their own requests at once."""
    prompts = [f"Rate {i}% on a {i + 1}-year bond means" for i in range(8)]
    solo = {p: sched.complete(p, 6).tokens for p in prompts}
    got: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def worker(p: str) -> None:
        try:
            got[p] = sched.complete(p, 6).tokens
            sched.stats()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert got == solo


LONG = " ".join(f"Segment {i} reported revenue of {100 + 7 * i} million and a margin of {10 + i % 5}%."
                for i in range(12))
FA_PROMPTS = PROMPTS[:4] + [
    (LONG[:300] + " Summarize:", 20, {}),                                   # ~90 tokens: the tiled path
    ("Notes: " + LONG + " Which segment grew most?", 24, {"temperature": 0.8, "seed": 5}),  # ~200 tokens
]


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_flash_attention_requests_equal_flash_attention_sessions(threads):
    """flash_attn=True: concurrent requests give a flash-attention session's tokens (prompts chunked on
    one kernel path although n_batch_busy is 16; contexts past 256 cells only with 1 thread, see
    fe_scheduler_params.flash_attn)."""
    prompts = FA_PROMPTS if threads == 1 else [p for p in FA_PROMPTS if len(p[0]) < 400]
    with Scheduler(n_slots=6, n_ctx=512, n_threads=threads, p99_token_ms=1e6, n_batch_busy=16,
                   flash_attn=True) as s:
        assert s.tokenize(FA_PROMPTS[5][0]).__len__() + FA_PROMPTS[5][1] > 256 or threads == 2
        streams = [s.generate(p, n, **kw) for p, n, kw in prompts]
        results: dict[int, tuple] = {}
        threads_ = [threading.Thread(target=lambda i=i: results.__setitem__(i, _run(streams[i])))
                    for i in range(len(prompts))]
        for t in threads_:
            t.start()
        for t in threads_:
            t.join(timeout=600)
        assert s.stats()["peak_active"] >= 3
    with Engine(n_ctx=512, n_threads=threads, prefix_reuse=False, flash_attn=True) as eng:
        for i, (p, n, kw) in enumerate(prompts):
            assert results[i] == _run(eng.generate(p, n, **kw)), f"request {i} differs from the session's"


def _read_all(streams) -> list[tuple]:
    got: dict[int, tuple] = {}
    ts = [threading.Thread(target=lambda i=i: got.__setitem__(i, _run(streams[i]))) for i in range(len(streams))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=600)
    return [got[i] for i in range(len(streams))]


BURST = [("Define a covenant.", 6, {}), ("Define a coupon.", 6, {"temperature": 0.8, "seed": 11}),
         ("Define duration.", 6, {}), ("Define a yield.", 6, {"temperature": 0.7, "seed": 2})]


@pytest.mark.slow
@pytest.mark.parametrize("flash_attn", [False, True])
def test_a_burst_of_short_prompts_is_prefilled_in_one_step(flash_attn):
    """A step spends its prompt-token budget (n_batch_busy while others decode) on a chunk of each
    new request in turn: four short prompts submitted together start decoding in the same step (or
    the next, when the decode thread woke for the first alone), and each request still gives a
    session's tokens. One request per step would take 3 steps more."""
    with Engine(n_ctx=256, n_threads=1, prefix_reuse=False, flash_attn=flash_attn) as eng:
        want = [_run(eng.generate(p, n, **kw)) for p, n, kw in BURST]
    with Scheduler(n_slots=4, n_ctx=256, n_threads=1, p99_token_ms=1e6, prefix_reuse=False,
                   flash_attn=flash_attn) as s:
        _read_all([s.generate(p, 12) for p, _, _ in BURST])  # the batch grows to 4
        steps = []
        for _ in range(3):  # submitted back to back; retried when the machine delayed a submit
            before = s.stats()["steps"]
            assert _read_all([s.generate(p, n, **kw) for p, n, kw in BURST]) == want
            steps.append(s.stats()["steps"] - before)
            if steps[-1] <= 8:
                break
        # 6 tokens: the prefill step gives the first, 5 decode steps the rest, a step ends them
        assert min(steps) <= 8, steps



@pytest.mark.slow
def test_a_long_prompt_is_spread_over_steps_that_keep_under_the_bound():
    """While others decode, a step evaluates at most the prompt tokens that fit, at the measured ms
    per prompt token, in 0.8 x p99_token_ms less its decode batch: with n_batch_busy 512, a
    ~400-token prompt that starts while another request decodes takes several chunks under a
    150 ms bound (~0.2 s of prefill and more on one thread) and one chunk under an unbounded one;
    both requests give an Engine's tokens either way."""
    long_prompt = "Summarise these figures. " + " ".join(
        f"Segment {i} revenue rose {i % 7 + 2}.{i % 10}% to {100 + 3 * i} million." for i in range(21))
    short = ("The bond's coupon is", 64)
    with Engine(n_ctx=1024, n_threads=1, prefix_reuse=False) as eng:
        assert 350 <= len(eng.tokenize(long_prompt)) <= 500
        want_short = _run(eng.generate(*short, ignore_eos=True))
        want_long = _run(eng.generate(long_prompt, 8))
    chunks = {}
    for bound in (150.0, 1e6):
        with Scheduler(n_slots=2, n_ctx=1024, n_threads=1, p99_token_ms=bound, n_batch_busy=512,
                       prefix_reuse=False) as s:
            first = s.generate(*short, ignore_eos=True)
            pieces = iter(first)
            got_first = next(pieces)  # it decodes: the long prompt starts in busy steps
            before = s.stats()["prompt_chunks"]
            assert _run(s.generate(long_prompt, 8)) == want_long
            chunks[bound] = s.stats()["prompt_chunks"] - before
            text = got_first + "".join(pieces)
            assert (list(first.tokens), text, first.finish_reason) == want_short
    assert chunks[1e6] == 1, chunks
    assert chunks[150.0] >= 2, chunks


@pytest.mark.slow
def test_busy_chunks_stay_on_the_tiled_path():
    """With flash attention a prompt of >= 64 tokens is evaluated in chunks of >= 64 (the tiled
    kernel's rows): a ~150-token prompt that starts while another request decodes (a busy budget of
    64) goes as 64 + the rest, never as 64 + 64 + a chunk under 64 on the row kernel, whose other
    rounding would change its K/V. Both requests give a flash-attention Engine's tokens."""
    prompt = "Summarise these figures. " + " ".join(
        f"Segment {i} revenue rose {i % 7 + 2}.{i % 10}% to {100 + 3 * i} million." for i in range(8))
    short = ("The bond's coupon is", 64)
    with Engine(n_ctx=512, n_threads=1, prefix_reuse=False, flash_attn=True) as eng:
        assert 128 < len(eng.tokenize(prompt)) < 192
        want_short = _run(eng.generate(*short, ignore_eos=True))
        want = _run(eng.generate(prompt, 8))
    with Scheduler(n_slots=2, n_ctx=512, n_threads=1, p99_token_ms=1e6, prefix_reuse=False,
                   flash_attn=True) as s:
        first = s.generate(*short, ignore_eos=True)
        pieces = iter(first)
        got_first = next(pieces)  # it decodes
        before = s.stats()["prompt_chunks"]
        assert _run(s.generate(prompt, 8)) == want
        assert s.stats()["prompt_chunks"] - before == 2
        text = got_first + "".join(pieces)
        assert (list(first.tokens), text, first.finish_reason) == want_short

SYSTEM = ("You are a careful financial analyst. Answer briefly and cite the figures you use. " +
          " ".join(f"Rule {i}: keep the leverage of segment {i} under {3 + i % 4}.{i}x." for i in range(10)))
QUESTIONS = ["What is a covenant?", "What is net interest margin?", "Define free cash flow.",
             "What does a yield curve inversion signal?", "What is duration risk?"]


def _ask(q: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]


@pytest.mark.slow
def test_copies_take_only_what_another_slot_has_evaluated():
    """Two requests with one long system prompt start while a third decodes (so prompts go in
    16-token chunks): the second may copy the first's K/V only as far as the first has evaluated
    it, and both give an Engine's tokens."""
    with Engine(n_ctx=1024, n_threads=1, prefix_reuse=False) as eng:
        want = [_run(eng.chat(_ask(q), 8)) for q in QUESTIONS[:2]]
    with Scheduler(n_slots=3, n_ctx=1024, n_threads=1, p99_token_ms=1e6, n_batch_busy=16) as s:
        _read_all([s.generate(f"Warm-up {i}:", 2) for i in range(3)])  # the batch grows to 3
        long_one = s.generate("Tell a long story about bonds.", 400, ignore_eos=True)
        next(iter(long_one))  # it decodes
        assert _read_all([s.chat(_ask(q), 8) for q in QUESTIONS[:2]]) == want
        long_one.cancel()
        "".join(long_one)


@pytest.mark.slow
@pytest.mark.parametrize("flash_attn", [False, True])
def test_slot_prefix_reuse_gives_the_same_tokens(flash_attn):
    """prefix_reuse (default): a request whose prompt starts as an earlier one's (the system prompt)
    evaluates only the rest, in turn and concurrently, after a cancel and with partial overlaps,
    with the tokens of an Engine that reuses nothing."""
    sampling = [{}, {"temperature": 0.8, "seed": 21}, {}, {"temperature": 0.7, "seed": 4, "repeat_penalty": 1.2}, {}]
    with Engine(n_ctx=1024, n_threads=1, prefix_reuse=False, flash_attn=flash_attn) as eng:
        want = [_run(eng.chat(_ask(q), 12, **kw)) for q, kw in zip(QUESTIONS, sampling)]
        want_raw = _run(eng.generate(SYSTEM[:200], 8))
    with Scheduler(n_slots=3, n_ctx=1024, n_threads=1, p99_token_ms=1e6, flash_attn=flash_attn) as s:
        n_system = s.count_chat_tokens(_ask(""))  # about the system prompt's tokens
        first = s.chat(_ask(QUESTIONS[0]), 12, **sampling[0])
        assert _run(first) == want[0] and first.profile["n_prompt_reused"] == 0
        # in turn: each reuses the system prompt of the slot the last one left
        for i in (1, 2):
            st = s.chat(_ask(QUESTIONS[i]), 12, **sampling[i])
            assert _run(st) == want[i], i
            assert st.profile["n_prompt_reused"] > n_system - 80, st.profile  # -64 on the tiled path
        # a cancelled request leaves its prompt's K/V, which the next one reuses
        c = s.chat(_ask(QUESTIONS[3]), 200, ignore_eos=True)
        for _ in c:
            if len(c.tokens) >= 3:
                c.cancel()
        assert c.finish_reason == "cancelled"
        # concurrently (slots chosen by common prefix), and a partial overlap with a raw prompt
        streams = [s.chat(_ask(q), 12, **kw) for q, kw in zip(QUESTIONS, sampling)]
        raw = s.generate(SYSTEM[:200], 8)
        got: dict[int, tuple] = {}
        ts = [threading.Thread(target=lambda i=i: got.__setitem__(i, _run(streams[i]))) for i in range(len(streams))]
        for t in ts:
            t.start()
        assert _run(raw) == want_raw
        for t in ts:
            t.join(timeout=600)
        assert [got[i] for i in range(len(streams))] == want
        stats = s.stats()
        # the slots without the system prompt took a copy of another slot's K/V of it
        assert stats["prefix_copies"] >= 2, stats
        assert stats["prompt_tokens_reused"] > 5 * (n_system - 80), stats
        assert stats["prompt_tokens_reused"] < stats["prompt_tokens"]
    with Scheduler(n_slots=2, n_ctx=1024, n_threads=1, prefix_reuse=False, flash_attn=flash_attn) as s:
        for q, kw, w in list(zip(QUESTIONS, sampling, want))[:2]:
            st = s.chat(_ask(q), 12, **kw)
            assert _run(st) == w and st.profile["n_prompt_reused"] == 0
        assert s.stats()["prompt_tokens_reused"] == 0


@pytest.mark.slow
def test_reuse_generated_reuses_the_answers_a_chat_sends_back():
    """reuse_generated: a slot keeps its answer's K/V, so the next turn of a chat (the earlier turns and
    the model's answer sent back) evaluates only the new message; the tokens are those of an Engine
    with reuse_generated=True taking the same turns (the same cache contents, bit for bit), and the
    default (exact reuse) re-evaluates the answer."""
    turns = ["What is a bond coupon?", "And what is its yield?", "Give one example."]

    def chat_turns(backend) -> tuple[list[tuple], list[int]]:
        messages, outs, reused = [{"role": "system", "content": SYSTEM}], [], []
        for q in turns:
            messages.append({"role": "user", "content": q})
            st = backend.chat(list(messages), 16)
            out = _run(st)
            outs.append(out)
            reused.append(st.profile["n_prompt_reused"])
            messages.append({"role": "assistant", "content": out[1]})
        return outs, reused

    with Engine(n_ctx=1024, n_threads=1, reuse_generated=True) as eng:
        want, eng_reused = chat_turns(eng)
    with Scheduler(n_slots=2, n_ctx=1024, n_threads=1, p99_token_ms=1e6, reuse_generated=True) as s:
        got, reused = chat_turns(s)
    assert got == want
    assert reused == eng_reused and reused[0] == 0
    with Scheduler(n_slots=2, n_ctx=1024, n_threads=1, p99_token_ms=1e6, settle_answers=False) as s:
        _, exact = chat_turns(s)
    # turn 2 and 3 start with the whole previous prompt and answer: exact reuse stops before the answer
    for k in (1, 2):
        assert reused[k] > exact[k] + 5, (reused, exact)
    with pytest.raises(InvalidArgumentError):
        Scheduler(n_slots=2, n_ctx=256, reuse_generated=1)


def _wait_settled(s: Scheduler, at_least: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = s.stats()
        if st["settled_tokens"] >= at_least or time.monotonic() > deadline:
            return st
        time.sleep(0.01)


@pytest.mark.slow
def test_settled_answers_are_reused_and_tokens_stay_exact():
    """settle_answers (the default): once a turn ends, the idle decode thread evaluates its answer
    again as prompt rows, so the next turn (the answer sent back) reuses it, and every turn's tokens
    equal an Engine's without reuse; off, the answer is evaluated again by the next turn."""
    turns = ["What is a bond coupon?", "And what is its yield?", "Give one example."]

    def chat_turns(backend, settles: bool) -> tuple[list[tuple], list[int]]:
        messages, outs, reused = [{"role": "system", "content": SYSTEM}], [], []
        for q in turns:
            messages.append({"role": "user", "content": q})
            before = backend.stats()["settled_tokens"] if settles else 0
            st = backend.chat(list(messages), 16)
            out = _run(st)
            outs.append(out)
            reused.append(st.profile["n_prompt_reused"])
            messages.append({"role": "assistant", "content": out[1]})
            if settles:  # what the decode thread settles once idle: the decoded answer tokens
                assert _wait_settled(backend, before + len(out[0]) - 1)["settled_tokens"] >= before + len(out[0]) - 1
        return outs, reused

    with Engine(n_ctx=1024, n_threads=1, prefix_reuse=False) as eng:
        want, _ = chat_turns(eng, False)
    with Scheduler(n_slots=2, n_ctx=1024, n_threads=1, p99_token_ms=1e6) as s:
        got, settled = chat_turns(s, True)
    with Scheduler(n_slots=2, n_ctx=1024, n_threads=1, p99_token_ms=1e6, settle_answers=False) as s:
        got_off, plain = chat_turns(s, False)
        assert s.stats()["settled_tokens"] == 0
    assert got == want and got_off == want
    assert settled[0] == plain[0] == 0
    for k in (1, 2):
        assert settled[k] > plain[k] + 5, (settled, plain)
    with pytest.raises(InvalidArgumentError, match="settle_answers"):
        Scheduler(n_slots=2, n_ctx=256, settle_answers="yes")


@pytest.mark.slow
def test_a_submit_stops_a_settle_which_resumes_when_idle():
    """A request that arrives while a long answer is being settled stops that chunk at once (it does
    not wait behind it); the settle is done at the next idle moment, and the chat's next turn then
    reuses the answer with the tokens of an Engine without reuse. A request that comes within 0.1 s
    of the scheduler going idle finds no settle started (a closed-loop client's next request)."""
    first = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is a bond coupon?"}]
    other_prompt = "Q: What is a stock split?\nA:"
    with Scheduler(n_slots=2, n_ctx=1024, n_threads=1, p99_token_ms=1e6) as s:
        for _ in range(3):  # an arrival must land inside the ~1 s settle: retried if it did not
            settled_before = s.stats()["settled_tokens"]
            long_answer = s.chat(first, 200, ignore_eos=True)
            other = s.generate(other_prompt, 4)  # takes the other slot
            _run(other)
            tokens, text, _ = _run(long_answer)
            time.sleep(0.25)  # idle: the settle starts after 0.1 s and takes ~0.5-1 s for 199 tokens
            again = s.generate(other_prompt, 4)  # arrives while the long answer is settled; reuses its slot
            _run(again)
            stats = s.stats()
            if stats["settles_stopped"] > 0:
                break
        assert stats["settles_stopped"] > 0, stats
        # within the idle grace: no settle starts, so none is stopped
        quick = s.stats()
        _run(s.generate(other_prompt, 4))
        _run(s.generate(other_prompt, 4))
        assert s.stats()["settles_stopped"] == quick["settles_stopped"]
        want_settled = settled_before + len(tokens) - 1  # one chunk: all of it or none
        assert _wait_settled(s, want_settled)["settled_tokens"] >= want_settled
        follow = first + [{"role": "assistant", "content": text}, {"role": "user", "content": "And its yield?"}]
        st = s.chat(follow, 12)
        got = _run(st)
        n_first = s.count_chat_tokens(first)
    with Engine(n_ctx=1024, n_threads=1, prefix_reuse=False) as eng:
        want = _run(eng.chat(follow, 12))
    assert got == want
    assert st.profile["n_prompt_reused"] > n_first + 100, (st.profile, n_first)
