"""`finllm-edge serve` against the real model, with the official openai client as the client and
raw httpx for what a client library would not send (malformed JSON, wrong types, huge bodies).

Servers run on a random free 127.0.0.1 port and are stopped by the fixtures.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai  # the dev extra; starlette/uvicorn: the serve extra (scripts/bootstrap.sh installs both)
import pytest

from finllm_edge.lab.serve import ServeBackend
from serve_helpers import running_server, wait_idle

pytestmark = pytest.mark.slow  # loads the model

MODEL = "smollm2-test"
Q = [{"role": "user", "content": "What is EBITDA? Answer in one sentence."}]


@pytest.fixture(scope="module")
def backend():
    b = ServeBackend(None, n_ctx=1024, n_threads=1, parallel=1, max_pending=8)  # 1 thread: robust on a busy host
    yield b
    b.close()


@pytest.fixture(scope="module")
def base(backend):
    with running_server(backend, MODEL, max_body_bytes=64 * 1024) as url:
        yield url


@pytest.fixture(scope="module")
def client(base):
    return openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=120)


def solo_chat(backend, messages, max_tokens, **kw):
    """(text, tokens, finish_reason, prompt tokens) of the same request straight on the backend's engine."""
    with backend._engine_lock:
        n_prompt = backend.impl.count_chat_tokens(messages)
        stream = backend.impl.chat(messages, max_tokens, **kw)
        text = "".join(stream)
        return text, list(stream.tokens), stream.finish_reason, n_prompt


def error_of(resp: httpx.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"], body
    return body["error"]


# ----------------------------------------------------------------------------- the openai client

def test_models_list_and_unknown_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).owned_by == "finllm-edge"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(model="gpt-4o", messages=Q, max_tokens=4)
    assert ei.value.body["code"] == "model_not_found"


def test_chat_non_streaming_equals_the_engine_with_usage_and_length(client, backend):
    r = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=12)
    text, tokens, reason, n_prompt = solo_chat(backend, Q, 12)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == text and text
    assert r.choices[0].finish_reason == "length" == reason
    assert r.usage.completion_tokens == len(tokens) == 12
    assert r.usage.prompt_tokens == n_prompt
    assert r.usage.total_tokens == n_prompt + 12
    assert r.object == "chat.completion" and r.model == MODEL


def test_chat_streaming_equals_non_streaming_and_ends_with_usage_and_done(client, base):
    full = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=16)
    chunks = list(client.chat.completions.create(model=MODEL, messages=Q, max_tokens=16, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == full.usage.model_dump() | {"completion_tokens_details": None,
                                                                      "prompt_tokens_details": None}
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    # the raw SSE: every event a data: line of JSON, the last one data: [DONE]
    with httpx.stream("POST", base + "/v1/chat/completions", timeout=120,
                      json={"model": MODEL, "messages": Q, "max_tokens": 4, "stream": True}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-1])
    assert "usage" not in json.loads(events[1][6:])  # no include_usage: no usage key


def test_finish_reason_stop_for_end_of_turn_and_for_a_stop_string(client, backend):
    ask = [{"role": "user", "content": "Say hello."}]
    r = client.chat.completions.create(model=MODEL, messages=ask, max_tokens=200)
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 200
    long = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=24).choices[0].message.content
    word = long.split()[3]
    cut = client.chat.completions.create(model=MODEL, messages=Q, max_tokens=24, stop=[word, "zzqx"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == long[: long.index(word)]
    s = list(client.chat.completions.create(model=MODEL, messages=Q, max_tokens=24, stop=word, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in s) == long[: long.index(word)]
    assert s[-1].choices[0].finish_reason == "stop"


def test_completions_streaming_and_not(client, backend):
    prompt = "The three financial statements are"
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10)
    with backend._engine_lock:
        direct = backend.impl.complete(prompt, 10)
        n_prompt = len(backend.impl.tokenize(prompt))
    assert r.choices[0].text == direct.text and r.object == "text_completion"
    assert r.choices[0].finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (n_prompt, 10)
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == direct.text
    assert chunks[-1].usage.completion_tokens == 10


def test_seeded_sampling_is_reproducible_through_the_server(client):
    kw = dict(model=MODEL, messages=Q, max_tokens=12, temperature=0.9, top_p=0.9)
    a = client.chat.completions.create(seed=1234, **kw).choices[0].message.content
    b = client.chat.completions.create(seed=1234, **kw).choices[0].message.content
    assert a == b


def test_several_clients_at_once_all_get_their_solo_answer(client, backend):
    asks = [[{"role": "user", "content": f"Define {w} in one sentence."}] for w in
            ("revenue", "liquidity", "a bond", "equity")]
    want = []
    for a in asks:
        want.append(solo_chat(backend, a, 10)[0])
    got: dict[int, str] = {}

    def ask(i):
        got[i] = client.chat.completions.create(model=MODEL, messages=asks[i], max_tokens=10).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [got.get(i) for i in range(len(asks))] == want


def test_a_chats_next_turn_reuses_the_settled_answer(client, base, backend):
    """Once a request ends and none waits, the server settles its answer (Engine.settle): a chat's
    next turn, which sends the answer back, reuses it, and its answer is still the one an engine
    without reuse gives. /health counts the settled tokens."""
    from finllm_edge.engine import Engine

    msgs = [{"role": "user", "content": "What is a bond coupon? Answer briefly."}]
    before = wait_idle(base)["settled_tokens"]
    first = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=16)
    deadline = time.monotonic() + 30
    while backend.stats()["settled_tokens"] < before + first.usage.completion_tokens - 1:
        assert time.monotonic() < deadline, backend.stats()
        time.sleep(0.02)
    assert httpx.get(base + "/health", timeout=10).json()["settle"] is True
    msgs += [{"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "And what is its yield?"}]
    second = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=12)
    reused = backend.impl.last_profile["n_prompt_reused"]
    with Engine(n_ctx=1024, n_threads=1, prefix_reuse=False) as fresh:
        want = "".join(fresh.chat(msgs, 12))
    assert second.choices[0].message.content == want
    assert reused > first.usage.prompt_tokens + first.usage.completion_tokens // 2, (reused, first.usage)


# ----------------------------------------------------------------------------- errors, raw

@pytest.mark.parametrize("body,param", [
    ({"messages": Q}, "model"),
    ({"model": MODEL}, "messages"),
    ({"model": MODEL, "messages": "hi"}, "messages"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": MODEL, "messages": Q, "temperature": "hot"}, "temperature"),
    ({"model": MODEL, "messages": Q, "max_tokens": "5"}, "max_tokens"),
    ({"model": MODEL, "messages": Q, "max_tokens": 0}, "max_tokens"),
    ({"model": MODEL, "messages": Q, "stream": "yes"}, "stream"),
    ({"model": MODEL, "messages": Q, "n": 2}, "n"),
    ({"model": MODEL, "messages": Q, "stop": 5}, "stop"),
    ({"model": MODEL, "messages": Q, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": MODEL, "messages": Q, "stop": [""]}, "stop"),
    ({"model": MODEL, "messages": Q, "stop": ["x" * 1000]}, "stop"),
    ({"model": MODEL, "messages": Q, "tools": [{"type": "function"}]}, "tools"),
    ({"model": MODEL, "messages": Q, "frobnicate": 1}, "frobnicate"),
    ({"model": MODEL, "messages": Q, "stream_options": {"include_usage": True}}, "stream_options"),
])
def test_bad_requests_are_400_in_openais_shape(base, body, param):
    r = httpx.post(base + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["type"] == "invalid_request_error" and err["param"] == param, err


def test_malformed_json_and_non_object_bodies(base):
    for raw in (b"{not json", b"", b"\xff\xfe", b"[1, 2]", b"null"):
        r = httpx.post(base + "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"},
                       timeout=60)
        assert r.status_code == 400, (raw, r.text)
        assert error_of(r)["type"] == "invalid_request_error"


def test_out_of_range_sampling_is_the_cores_400(base):
    r = httpx.post(base + "/v1/chat/completions", timeout=60,
                   json={"model": MODEL, "messages": Q, "temperature": -1})
    assert r.status_code == 400
    assert "temperature" in error_of(r)["message"]


def test_oversize_bodies_are_413_before_being_read(base):
    big = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 100_000}]}).encode()
    r = httpx.post(base + "/v1/chat/completions", content=big, headers={"Content-Type": "application/json"},
                   timeout=60)
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"

    def chunked():  # no Content-Length: the server counts the streamed body and stops at the limit
        for i in range(0, len(big), 8192):
            yield big[i:i + 8192]

    r = httpx.post(base + "/v1/chat/completions", content=chunked(), headers={"Content-Type": "application/json"},
                   timeout=60)
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"


def test_a_prompt_over_the_context_is_refused_before_work(base, backend):
    t0 = time.perf_counter()
    r = httpx.post(base + "/v1/completions", timeout=60,
                   json={"model": MODEL, "prompt": "ledger " * 1500, "max_tokens": 4, "stream": True})
    assert r.status_code == 400, r.text
    assert error_of(r)["code"] == "context_length_exceeded"
    assert backend.impl.last_profile is None or backend.impl.last_profile["n_prompt"] < 1000
    assert time.perf_counter() - t0 < 60


def test_unknown_path_and_method_in_openais_shape(base):
    r = httpx.get(base + "/v1/embeddings", timeout=10)
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = httpx.get(base + "/v1/chat/completions", timeout=10)
    assert r.status_code == 405 and error_of(r)


def test_response_format_passes_through_or_is_a_clear_400(base, backend):
    schema = {"type": "object", "properties": {"revenue": {"type": "integer"}}, "required": ["revenue"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Revenue was 120. Give it as JSON."}],
            "max_tokens": 64, "response_format": fmt}
    r = httpx.post(base + "/v1/chat/completions", json=body, timeout=120)
    if backend.response_format_supported:
        assert r.status_code == 200, r.text
        out = json.loads(r.json()["choices"][0]["message"]["content"])
        assert isinstance(out["revenue"], int)
        bad_schema = dict(body, response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": 5}})
        assert httpx.post(base + "/v1/chat/completions", json=bad_schema, timeout=120).status_code == 400
    else:
        assert r.status_code == 400 and "not supported yet" in error_of(r)["message"]
    body["response_format"] = {"type": "text"}
    assert httpx.post(base + "/v1/chat/completions", json=body, timeout=120).status_code == 200


# ----------------------------------------------------------------------------- cancel and load

def test_client_disconnect_cancels_the_generation(base, backend):
    body = {"model": MODEL, "messages": Q, "max_tokens": 1000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60) as resp:
        got = 0
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                got += 1
            if got >= 4:
                break
    h = wait_idle(base, timeout=120)
    assert h["pending"] == 0, h
    gen = backend.impl.last_profile["n_gen"]
    assert gen < 200, f"the generation ran on after the client left ({gen} of 1000 tokens)"
    r = httpx.post(base + "/v1/chat/completions", json={"model": MODEL, "messages": Q, "max_tokens": 3}, timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3


def test_more_than_max_pending_requests_get_503(base, backend):
    old = backend.max_pending
    backend.max_pending = 1
    try:
        body = {"model": MODEL, "messages": Q, "max_tokens": 400, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()  # kept: a dropped iterator closes the response
            next(lines)
            r = httpx.post(base + "/v1/chat/completions", json={"model": MODEL, "messages": Q, "max_tokens": 2},
                           timeout=60)
            assert r.status_code == 503, str(httpx.get(base + "/health", timeout=10).json())
            err = error_of(r)
            assert err["type"] == "server_error" and err["code"] == "server_busy"
    finally:
        backend.max_pending = old
    wait_idle(base)


def test_health(base, backend):
    h = httpx.get(base + "/health", timeout=10).json()
    assert h["status"] == "ok" and h["model"] == MODEL and h["mode"] == "engine"
    assert h["response_format"] is backend.response_format_supported
    import importlib.util

    # the serve extra's uvloop, when installed, is the server's loop (uvicorn_config: loop "auto")
    assert h["event_loop"] == ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")


def test_oversize_headers_are_refused(base):
    """h11 bounds a request's headers: once the headers it holds unparsed pass MAX_HEADER_BYTES, the
    request gets a 4xx (a header block that arrives whole in one socket read, up to the loop's read
    size of ~256 KiB, is parsed at once). A 4 MiB header always spans many reads: refused, and the
    server goes on serving. (httptools would take it: tried, 200.)"""
    import socket

    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        head = b""
        try:
            for _ in range(64):  # 4 MiB in 64 KiB writes; the server may answer and close midway
                s.sendall(b"a" * 65536)
        except OSError:
            pass
        try:
            s.sendall(b"\r\n\r\n")
        except OSError:
            pass
        try:
            head = s.recv(64)
        except OSError:
            head = b"(reset)"
    assert head.startswith(b"HTTP/1.1 4") or head in (b"", b"(reset)"), head
    assert not head.startswith(b"HTTP/1.1 2"), head
    assert httpx.get(base + "/health", timeout=10).status_code == 200
