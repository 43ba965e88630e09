"""`finllm-edge serve` without a model: the OpenAI request checks, the loopback rule, --help.
(The server against the real model, with the openai client: tests/test_serve.py.)"""

from __future__ import annotations

import subprocess
import sys

import pytest

from finllm_edge.lab.serve import is_loopback  # needs the serve extra (scripts/bootstrap.sh installs it)
from finllm_edge.lab.serve.protocol import APIError, chunk, parse_request

M = "m"
Q = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return parse_request({"model": M, "messages": Q, **fields}, "chat", M, response_format_supported=False)


def test_a_full_chat_request_maps_to_the_cores_options():
    r = chat(max_completion_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop="END", stream=True,
             stream_options={"include_usage": True}, n=1, user="u", presence_penalty=0)
    assert (r.kind, r.max_tokens, r.stream, r.include_usage) == ("chat", 7, True, True)
    assert r.kwargs == {"temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": ("END",)}
    assert r.messages == [{"role": "user", "content": "hi"}]


def test_max_completion_tokens_wins_and_default_is_none():
    assert chat(max_tokens=5, max_completion_tokens=9).max_tokens == 9
    assert chat().max_tokens is None


def test_text_parts_are_joined_and_developer_is_system():
    r = parse_request({"model": M, "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]},
        "chat", M, False)
    assert r.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]


@pytest.mark.parametrize("fields,status,param", [
    ({"model": "other"}, 404, "model"),
    ({"n": 3}, 400, "n"),
    ({"temperature": True}, 400, "temperature"),
    ({"seed": 1.5}, 400, "seed"),
    ({"stop": ["a", 1]}, 400, "stop"),
    ({"logprobs": True}, 400, "logprobs"),
    ({"frequency_penalty": 0.5}, 400, "frequency_penalty"),
    ({"response_format": {"type": "json_object"}}, 400, "response_format"),
    ({"response_format": "json"}, 400, "response_format"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400,
     "messages[0].content"),
    ({"messages": []}, 400, "messages"),
    ({"prompt": "x"}, 400, "prompt"),  # a completions field on the chat endpoint
])
def test_refusals_name_the_field(fields, status, param):
    with pytest.raises(APIError) as ei:
        chat(**fields)
    assert (ei.value.status, ei.value.param) == (status, param)
    body = ei.value.body()["error"]
    assert set(body) == {"message", "type", "param", "code"} and body["message"]


def test_response_format_passes_through_when_the_backend_supports_it():
    r = parse_request({"model": M, "messages": Q, "response_format": {"type": "json_object"}}, "chat", M, True)
    assert r.kwargs["response_format"] == {"type": "json_object"}
    assert "response_format" not in chat(response_format={"type": "text"}).kwargs


def test_completion_prompts():
    r = parse_request({"model": M, "prompt": ["one"], "max_tokens": 3}, "completion", M, False)
    assert (r.prompt, r.max_tokens) == ("one", 3)
    for bad_prompt in (["a", "b"], [1, 2, 3], None, 5):
        with pytest.raises(APIError) as ei:
            parse_request({"model": M, "prompt": bad_prompt}, "completion", M, False)
        assert ei.value.param == "prompt"
    with pytest.raises(APIError):
        parse_request({"model": M, "prompt": "x", "messages": Q}, "completion", M, False)


def test_chunks_carry_usage_only_with_include_usage():
    r = chat(stream=True)
    assert "usage" not in chunk(r, "id", 0, text="a")
    r = chat(stream=True, stream_options={"include_usage": True})
    assert chunk(r, "id", 0, text="a")["usage"] is None
    last = chunk(r, "id", 0, use={"prompt_tokens": 1}, no_choice=True)
    assert last["choices"] == [] and last["usage"] == {"prompt_tokens": 1}


def test_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def test_help_teaches():
    out = subprocess.run([sys.executable, "-m", "finllm_edge.lab", "serve", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for needle in ("/v1/chat/completions", "OpenAI(base_url=", "--parallel", "127.0.0.1", "--max-body-bytes",
                   "no authentication"):
        assert needle in out.stdout, needle


def test_batch_option_reaches_the_backend(monkeypatch):
    """-b/--batch is the backend's n_batch (the scheduler's per-step prompt budget), never ignored."""
    import argparse
    from pathlib import Path

    import finllm_edge.lab.serve as serve_mod
    from finllm_edge.lab import cli_serve

    seen: dict = {}

    class FakeBackend:
        model_path, mode, flash_attn, drift = Path("m.gguf"), "scheduler", True, None

        def __init__(self, model, **kw):
            seen.update(kw)

        def close(self):
            seen["closed"] = True

    monkeypatch.setattr(serve_mod, "ServeBackend", FakeBackend)
    monkeypatch.setattr(serve_mod, "serve", lambda *a, **k: None)
    parser = argparse.ArgumentParser()
    cli_serve.configure(parser)
    assert cli_serve.main(parser.parse_args(["--parallel", "8", "-b", "63"])) == 0
    assert seen["n_batch"] == 63 and seen["parallel"] == 8 and seen["closed"]


@pytest.mark.parametrize("kind", ["chat", "completion"])
@pytest.mark.parametrize("usage_on", [False, True])
def test_piece_frames_are_the_chunks_sse_frames(kind, usage_on):
    from finllm_edge.lab.serve.app import PieceFrames, sse

    body = {"model": M, "stream": True, "stream_options": {"include_usage": usage_on}}
    body.update({"messages": Q} if kind == "chat" else {"prompt": "p"})
    r = parse_request(body, kind, M, response_format_supported=False)
    frames = PieceFrames(r, "cmpl-1", 7)
    for text in ["", "a", ' "quoted" ', "line\nbreak\\", "€ 12,5 Mio. — 日本", "\x00piece\x00", "😀"]:
        assert frames(text) == sse(chunk(r, "cmpl-1", 7, text=text))


def test_a_jobs_mailbox_hands_over_every_event_in_order_with_few_wakeups():
    """Events posted from a worker thread reach the loop in order, all of them; those that pile up
    while the loop is busy come in one take(); a take() with nothing posted times out with []."""
    import asyncio
    import threading

    from finllm_edge.lab.serve.backend import Event, Job

    class NoBackend:
        def _cancel(self, job):
            pass

    async def main():
        loop = asyncio.get_running_loop()
        job = Job(NoBackend(), loop)
        assert await job.take(0.01) == []
        wakes = 0
        real = loop.call_soon_threadsafe

        def counting(*a):
            nonlocal wakes
            wakes += 1
            return real(*a)

        loop.call_soon_threadsafe = counting
        n = 2000

        def worker():
            for i in range(n):
                job.post(Event("piece", str(i)))
            job.post(Event("done"))

        t = threading.Thread(target=worker)
        t.start()
        got: list[Event] = []
        takes = 0
        while not got or got[-1].kind != "done":
            got += await job.take(5.0)
            takes += 1
        t.join()
        assert [e.text for e in got[:-1]] == [str(i) for i in range(n)]
        assert wakes <= takes < n  # at most one wake-up per take; several events per take
        held = [Event("piece", "x"), Event("piece", "y")]
        for e in held:  # posted while nobody waits: no wake-up, both in the next take
            job.post(e)
        assert await job.take(0.01) == held
        assert wakes <= takes

    asyncio.run(main())
