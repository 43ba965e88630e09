"""`finllm-edge serve`: a local OpenAI-compatible HTTP server over the core (a lab tool; the
runtime never imports it). Needs the `serve` extra: pip install 'finllm-edge[serve]'.

    from finllm_edge.lab.serve import ServeBackend, create_app, serve
    serve(ServeBackend("model.gguf"), "model", host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from .app import DEFAULT_MAX_BODY, create_app
from .backend import ServeBackend

__all__ = ["ServeBackend", "create_app", "serve", "uvicorn_config", "is_loopback", "DEFAULT_MAX_BODY",
           "MAX_HEADER_BYTES"]


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) resolves to loopback addresses only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


MAX_HEADER_BYTES = 64 * 1024  # h11 refuses a request once the headers it holds unparsed pass this


def uvicorn_config(app, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
                   max_pending: int = 32, **extra):
    """The one uvicorn configuration of the server (serve() and the tests use it).

    HTTP/1.1 by h11, whose parser bounds a request's headers (MAX_HEADER_BYTES of unparsed headers;
    a block that arrives whole in one socket read is parsed at once); httptools took a 2 MB header.
    The event loop is uvicorn's "auto": uvloop (the serve extra) when installed, which cuts the
    loop's CPU per streamed token by about a third.
    limit_concurrency bounds open connections (uvicorn answers 503 beyond it); the backend bounds the
    requests running or waiting for the model (--max-pending)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http="h11", loop="auto",
                          limit_concurrency=4 * max_pending + 16, timeout_keep_alive=5,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES, **extra)


def serve(backend: ServeBackend, model_id: str, *, host: str = "127.0.0.1", port: int = 8000,
          max_body_bytes: int = DEFAULT_MAX_BODY, log_level: str = "info") -> None:
    """Run the server until interrupted (uvicorn; one process, one event loop)."""
    import uvicorn

    if not is_loopback(host):
        bar = "!" * 78
        print(f"{bar}\nWARNING: finllm-edge serve is listening on {host}, not on loopback: anyone who can reach "
              f"this machine\ncan use the model, with no authentication and no TLS. Use --host 127.0.0.1 unless "
              f"you mean it.\n{bar}", file=sys.stderr, flush=True)
    app = create_app(backend, model_id, max_body_bytes=max_body_bytes)
    uvicorn.Server(uvicorn_config(app, host=host, port=port, log_level=log_level,
                                  max_pending=backend.max_pending)).run()
