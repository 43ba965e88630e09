"""`finllm-edge serve --parallel N`: several clients at once on the core's Scheduler, through
the official openai client. Every answer equals the same request served alone; a client that
goes away cancels its own generation and leaves the others' answers intact."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from finllm_edge.lab.serve import ServeBackend
from serve_helpers import running_server, wait_idle

pytestmark = pytest.mark.slow  # loads the model

MODEL = "smollm2-par"
ASKS = [[{"role": "user", "content": f"Define {w} in one sentence."}] for w in
        ("revenue", "liquidity", "a bond", "equity", "inflation", "a dividend")]


@pytest.fixture(scope="module")
def server():
    b = ServeBackend(None, n_ctx=512, n_threads=1, parallel=4, max_pending=16)
    assert b.mode == "scheduler"
    with running_server(b, MODEL) as base:
        yield b, base, openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)
    b.close()


def test_concurrent_clients_get_their_solo_answers(server):
    backend, base, client = server
    lengths = [6, 14, 9, 20, 4, 11]  # mixed answer lengths
    solo = [client.chat.completions.create(model=MODEL, messages=a, max_tokens=n) for a, n in zip(ASKS, lengths)]
    streamed: dict[int, tuple[str, str | None]] = {}
    plain: dict[int, openai.types.chat.ChatCompletion] = {}

    def ask(i):
        if i % 2:  # half stream, half do not
            chunks = list(client.chat.completions.create(model=MODEL, messages=ASKS[i], max_tokens=lengths[i],
                                                         stream=True))
            streamed[i] = ("".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
                           chunks[-1].choices[0].finish_reason)
        else:
            plain[i] = client.chat.completions.create(model=MODEL, messages=ASKS[i], max_tokens=lengths[i])

    seen: set[str] = set()
    running = threading.Event()

    def watch():  # which threads exist while the requests run
        while not running.wait(0.005):
            seen.update(t.name for t in threading.enumerate())

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(ASKS))]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    running.set()
    watcher.join()
    # the event loop reads every stream (the core's wake-up fd): no thread per request
    assert not any(n.startswith("finllm-serve-job") for n in seen), seen
    for i, s in enumerate(solo):
        want = (s.choices[0].message.content, s.choices[0].finish_reason)
        if i % 2:
            assert streamed[i] == want, i
        else:
            got = plain[i]
            assert (got.choices[0].message.content, got.choices[0].finish_reason) == want, i
            assert got.usage == s.usage, i
    health = httpx.get(base + "/health", timeout=10).json()
    assert health["flash_attn"] is True  # the default with --parallel > 1
    stats = health["scheduler"]
    assert stats["peak_active"] >= 2, stats  # they did run together


def test_tokens_arrive_by_the_cores_wakeups_alone(server, monkeypatch):
    """With the 0.1 s safety-net refresh turned off, a streamed answer still arrives whole: the
    pieces come by the core's wake-up fd (a broken pump would leave this request hanging)."""
    from finllm_edge.lab.serve.backend import Job

    backend, base, client = server
    want = client.chat.completions.create(model=MODEL, messages=ASKS[2], max_tokens=12)
    monkeypatch.setattr(Job, "refresh", lambda self: None)
    chunks = list(client.with_options(timeout=60).chat.completions.create(
        model=MODEL, messages=ASKS[2], max_tokens=12, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want.choices[0].message.content


def test_a_client_leaving_cancels_only_its_own_generation(server):
    backend, base, client = server
    want = client.chat.completions.create(model=MODEL, messages=ASKS[0], max_tokens=24)
    before = httpx.get(base + "/health", timeout=10).json()["scheduler"]["cancelled"]
    got: dict = {}

    def other():
        got["r"] = client.chat.completions.create(model=MODEL, messages=ASKS[0], max_tokens=24)

    t = threading.Thread(target=other)
    body = {"model": MODEL, "messages": ASKS[1], "max_tokens": 1000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=120) as resp:
        lines = resp.iter_lines()
        next(lines)
        t.start()
        for _ in range(3):
            next(lines)
    t.join(300)
    h = wait_idle(base, timeout=120)
    assert h["pending"] == 0
    assert h["scheduler"]["cancelled"] == before + 1
    assert got["r"].choices[0].message.content == want.choices[0].message.content
    assert got["r"].usage == want.usage


def test_batch_size_goes_to_the_scheduler():
    """serve -b N: the scheduler's n_batch (the core sets n_batch_busy to min(64, N)); the core checks its range."""
    from finllm_edge.errors import InvalidArgumentError

    b = ServeBackend(None, n_ctx=256, n_threads=1, parallel=2, n_batch=63)
    b.close()
    with pytest.raises(InvalidArgumentError, match="n_batch"):
        ServeBackend(None, n_ctx=256, n_threads=1, parallel=2, n_batch=1)
