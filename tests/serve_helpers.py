"""A `finllm-edge serve` app in a background thread on a random free 127.0.0.1 port, for tests."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(backend, model_id: str, **app_kwargs):
    """Yield the base URL (http://127.0.0.1:PORT) of the app served by uvicorn; stopped on exit."""
    import uvicorn

    from finllm_edge.lab.serve import create_app, uvicorn_config

    app = create_app(backend, model_id, **app_kwargs)
    for _ in range(5):
        port = free_port()
        config = uvicorn_config(app, port=port, log_level="warning", lifespan="off",
                                max_pending=getattr(backend, "max_pending", 32))
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if server.started:
            break
        server.should_exit = True
        thread.join(10)
    else:
        raise RuntimeError("could not start the test server on a free port")
    base = f"http://127.0.0.1:{port}"
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "the test server did not stop"


def wait_idle(base: str, timeout: float = 30.0) -> dict:
    """Poll /health until no request is running or waiting; return the last health body."""
    deadline = time.monotonic() + timeout
    while True:
        h = httpx.get(base + "/health", timeout=10).json()
        if h["pending"] == 0 or time.monotonic() > deadline:
            return h
        time.sleep(0.05)
