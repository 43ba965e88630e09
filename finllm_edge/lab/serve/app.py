"""The Starlette app of `finllm-edge serve`: routes, body limits, SSE, errors in OpenAI's shape.

    /v1/chat/completions   POST  chat (stream or not)
    /v1/completions        POST  raw-prompt completion (stream or not)
    /v1/models             GET   the one model served;  /v1/models/{id}
    /health                GET   {"status": "ok", ...}

Bodies larger than `max_body_bytes` are refused with 413 before they are read whole (by their
Content-Length, and by counting a streamed body). A prompt that does not fit the context is
refused by the core before any work (400, code context_length_exceeded). A client that goes
away cancels its generation.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from finllm_edge.errors import ContextOverflowError, EngineBusyError, FinLLMEdgeError, InvalidArgumentError

from .backend import Event, Job, Overloaded, ServeBackend
from .protocol import (
    APIError,
    GenRequest,
    bad,
    chunk,
    completion_body,
    model_card,
    new_id,
    now,
    parse_request,
    usage,
)

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB of JSON: far more than any prompt that fits a phone-sized context
DISCONNECT_POLL_S = 0.1


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def core_error(exc: BaseException) -> APIError:
    """A failure of the backend as an OpenAI error."""
    if isinstance(exc, ContextOverflowError):
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, EngineBusyError):  # the scheduler's queue is full
        return APIError(503, f"The server is busy: {exc}", type="server_error", code="server_busy")
    if isinstance(exc, InvalidArgumentError):
        return APIError(400, str(exc), code="invalid_value")
    if isinstance(exc, (FinLLMEdgeError, ValueError)):
        return APIError(400, str(exc))
    return APIError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error")


async def read_json(request: Request, limit: int) -> Any:
    """The JSON body, refused (413) past `limit` bytes without reading it whole."""
    cl = request.headers.get("content-length")
    if cl is not None:
        try:
            n = int(cl)
        except ValueError:
            raise bad("Invalid Content-Length header.") from None
        if n > limit:
            raise APIError(413, f"The request body is {n} bytes; this server accepts at most {limit} bytes "
                                f"(--max-body-bytes).", code="request_too_large")
    buf = bytearray()
    async for part in request.stream():
        buf += part
        if len(buf) > limit:
            raise APIError(413, f"The request body exceeds {limit} bytes (--max-body-bytes).",
                           code="request_too_large")
    try:
        return json.loads(buf)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"The request body is not valid JSON: {exc}. Send a JSON object with "
                  f"Content-Type: application/json.", code="invalid_json") from None


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class PieceFrames:
    """The SSE frames of one response's text pieces: chunk()'s JSON, in which only the text changes,
    is encoded once and each piece is put in its place."""

    _MARK = "\x00piece\x00"

    def __init__(self, req: GenRequest, rid: str, created: int) -> None:
        parts = sse(chunk(req, rid, created, text=self._MARK)).split(json.dumps(self._MARK).encode())
        if len(parts) != 2:
            raise AssertionError("the chunk template holds its text once")
        self._head, self._tail = parts

    def __call__(self, text: str) -> bytes:
        return self._head + json.dumps(text).encode() + self._tail


class JobEvents:
    """The events of one job as the loop takes them: every event that is ready at once, in order.
    Polls the client while none comes, and cancels the job (raising CancelledError) once it left."""

    def __init__(self, job: Job, request: Request) -> None:
        self._job, self._request = job, request
        self._held: list[Event] = []

    async def batch(self) -> list[Event]:
        if self._held:
            out, self._held = self._held, []
            return out
        while True:
            out = await self._job.take(DISCONNECT_POLL_S)
            if out:
                return out
            self._job.refresh()
            out = await self._job.take(0)
            if out:
                return out
            if await self._request.is_disconnected():
                self._job.cancel()
                raise asyncio.CancelledError("client disconnected")

    async def first(self) -> Event:
        """The first event; the rest of its batch is kept for batch()."""
        out = await self.batch()
        self._held = out[1:]
        return out[0]


def create_app(backend: ServeBackend, model_id: str, *, max_body_bytes: int = DEFAULT_MAX_BODY) -> Starlette:
    created = now()

    async def generate(request: Request, kind: str) -> Response:
        body = await read_json(request, max_body_bytes)
        req = parse_request(body, kind, model_id, backend.response_format_supported)
        payload = req.messages if kind == "chat" else req.prompt
        try:
            job = backend.submit(asyncio.get_running_loop(), kind, payload, req.max_tokens, req.kwargs)
        except Overloaded as exc:
            raise APIError(503, f"The server is busy: {exc}.", type="server_error", code="server_busy") from None
        events = JobEvents(job, request)
        try:
            first = await events.first()
        except BaseException:
            job.cancel()
            raise
        if first.kind == "error":
            raise core_error(first.error)  # refused before any work: no stream has been opened
        rid, t = new_id(kind), now()
        if req.stream:
            return StreamingResponse(stream_events(job, events, req, rid, t), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        parts: list[str] = []
        try:
            while True:
                for ev in await events.batch():
                    if ev.kind == "piece":
                        parts.append(ev.text)
                    elif ev.kind == "error":
                        raise core_error(ev.error)
                    elif ev.kind == "done":
                        return JSONResponse(completion_body(req, rid, t, "".join(parts),
                                                            ev.finish_reason or "stop", usage(ev.n_prompt, ev.n_gen)))
        except BaseException:
            job.cancel()
            raise

    async def stream_events(job: Job, events: JobEvents, req: GenRequest, rid: str, t: int) -> AsyncIterator[bytes]:
        """One chunk per text piece (as OpenAI and llama-server stream); pieces that are ready together
        go out in one write."""
        piece = PieceFrames(req, rid, t)
        try:
            if req.kind == "chat":
                yield sse(chunk(req, rid, t, text="", role=True))
            while True:
                out = bytearray()
                end = False
                for ev in await events.batch():
                    if ev.kind == "piece":
                        out += piece(ev.text)
                    elif ev.kind == "error":
                        out += sse(core_error(ev.error).body())
                        end = True
                    elif ev.kind == "done":
                        out += sse(chunk(req, rid, t, finish_reason=ev.finish_reason or "stop"))
                        if req.include_usage:
                            out += sse(chunk(req, rid, t, use=usage(ev.n_prompt, ev.n_gen), no_choice=True))
                        end = True
                    if end:
                        break
                if end:
                    yield bytes(out) + b"data: [DONE]\n\n"
                    break
                if out:
                    yield bytes(out)
        finally:
            job.cancel()  # a no-op when it finished; stops the generation when the client went away

    async def chat_completions(request: Request) -> Response:
        return await generate(request, "chat")

    async def completions(request: Request) -> Response:
        return await generate(request, "completion")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card(model_id, created)]})

    async def model(request: Request) -> Response:
        mid = request.path_params["model"]
        if mid != model_id:
            raise APIError(404, f"The model '{mid}' does not exist; this server serves '{model_id}'.",
                           param="model", code="model_not_found")
        return JSONResponse(model_card(model_id, created))

    async def health(request: Request) -> Response:
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]  # "uvloop" or "asyncio"
        return JSONResponse({"status": "ok", "model": model_id, "event_loop": loop,
                             "response_format": backend.response_format_supported, **backend.stats()})

    async def drift(request: Request) -> Response:
        if backend.drift is None:
            raise APIError(404, "This server has no drift monitor; start it with --drift-ref FILE "
                                "(a reference from `finllm-edge convert --drift-ref` or `finllm-edge drift ref`).",
                           code="drift_not_enabled")
        return Response(backend.drift.state_json(), media_type="application/json")

    async def on_api_error(request: Request, exc: Exception) -> Response:
        return error_response(exc)  # type: ignore[arg-type]

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        msg = (f"Unknown path {request.url.path}; this server has /v1/chat/completions, /v1/completions, "
               f"/v1/models, /v1/drift and /health." if exc.status_code == 404 else str(exc.detail))
        return error_response(APIError(exc.status_code, msg, code=code))

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/v1/drift", drift, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={APIError: on_api_error, HTTPException: on_http_error})
