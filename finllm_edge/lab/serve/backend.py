"""What the server generates with: one class over either one `Engine` behind a lock (requests
served in turn) or the core's `Scheduler` (`--parallel N`: N sequences decoded together in one
batch by the core). Streams are iterated in worker threads, never on the event loop; each
request's events reach the loop through its Job's mailbox.

Admission is bounded: at most `max_pending` requests are running or waiting at once; one more
is refused at once (503), never queued without bound.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finllm_edge.backend import TokenStream


class Overloaded(Exception):
    """More requests than `max_pending` are running or waiting."""


@dataclass
class Event:
    kind: str                 # "started" | "piece" | "done" | "error"
    text: str = ""
    finish_reason: str | None = None
    n_prompt: int = 0
    n_gen: int = 0
    error: BaseException | None = None


class Job:
    """One request on its worker thread. Its events are taken on the event loop (`take`); `cancel()`
    is safe from the loop at any time (before start, while waiting for the engine, mid-stream).

    Events pass through a mailbox: the worker appends under a lock and wakes the loop only when the
    mailbox was empty and the loop is waiting, so tokens that pile up while the loop is busy cost
    one wake-up, not one each, and `take` hands them over together."""

    def __init__(self, backend: "ServeBackend", loop: asyncio.AbstractEventLoop) -> None:
        self._backend = backend
        self._loop = loop
        self._box: list[Event] = []
        self._lock = threading.Lock()
        self._waiter: asyncio.Future | None = None  # set by take() while the mailbox is empty
        self.cancelled = threading.Event()
        self.stream: TokenStream | None = None
        self.active = False   # True while this job owns the engine (Engine mode) or has a stream

    def post(self, ev: Event) -> None:
        """Worker thread: hand one event to the loop."""
        with self._lock:
            self._box.append(ev)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)

    async def take(self, timeout: float) -> list[Event]:
        """Event loop: every event posted so far (at least one), or [] after `timeout` seconds without one."""
        with self._lock:
            if self._box:
                out, self._box = self._box, []
                return out
            waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            with self._lock:
                if self._waiter is waiter:
                    self._waiter = None
                out, self._box = self._box, []
        return out

    def cancel(self) -> None:
        self.cancelled.set()
        self._backend._cancel(self)


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class ServeBackend:
    """`parallel` == 1: one Engine, requests in turn. `parallel` > 1: finllm_edge.Scheduler with
    that many slots (each of n_ctx tokens). flash_attn None: on with parallel > 1, off with 1.
    reuse_generated: a chat's next request reuses the K/V of the answers it sends back (see Engine).
    n_batch: prompt tokens per decode call (the scheduler's per-step budget; while others decode the core's
    n_batch_busy, min(64, n_batch)).
    drift_ref: a drift reference file; every request is counted by the core's monitor (`drift`)."""

    def __init__(self, model_path: str | Path | None = None, *, n_ctx: int = 2048, n_threads: int | None = None,
                 parallel: int = 1, max_pending: int = 32, flash_attn: bool | None = None,
                 reuse_generated: bool = False, drift_ref: str | Path | None = None, n_batch: int = 512) -> None:
        from finllm_edge import Engine

        self.parallel = parallel
        if flash_attn is None:  # auto: on for the scheduler (throughput), off for the session (finer prefix reuse)
            flash_attn = parallel > 1
        self.max_pending = max_pending
        self._pending = 0
        self._admit = threading.Lock()
        self._state = threading.Lock()   # orders "job becomes active/inactive" against cancel()
        self._engine_lock = threading.Lock()
        if parallel > 1:
            try:
                from finllm_edge import Scheduler
            except ImportError:
                raise ValueError("--parallel > 1 needs finllm_edge.Scheduler (concurrent sessions in the core), "
                                 "which this build does not have; use --parallel 1") from None
            self.impl: Any = Scheduler(model_path, n_slots=parallel, n_ctx=n_ctx, n_threads=n_threads,
                                       flash_attn=flash_attn, reuse_generated=reuse_generated,
                                       n_batch=n_batch)
            self.mode = "scheduler"
        else:
            self.impl = Engine(model_path, n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, flash_attn=flash_attn,
                               reuse_generated=reuse_generated)
            self.mode = "engine"
        self.drift = None
        if drift_ref is not None:
            try:
                self.drift = self.impl.enable_drift(drift_ref)
            except BaseException:
                self.impl.close()
                raise
        self.model_path = Path(getattr(self.impl, "model_path", model_path or ""))
        self.n_ctx = n_ctx
        self.flash_attn = flash_attn
        self.reuse_generated = reuse_generated

    @property
    def response_format_supported(self) -> bool:
        """Whether the backend takes OpenAI's response_format (constrained decoding in the core).
        generate()/chat() pass their keywords to _stream(), whose signature lists the options."""
        stream = getattr(self.impl, "_stream", None)
        return stream is not None and "response_format" in inspect.signature(stream).parameters

    def close(self) -> None:
        self.impl.close()

    # ------------------------------------------------------------------------------------
    def submit(self, loop: asyncio.AbstractEventLoop, kind: str, payload: Any, max_tokens: int | None,
               kwargs: dict) -> Job:
        """Start a request on a worker thread; raises Overloaded when max_pending are in flight."""
        with self._admit:
            if self._pending >= self.max_pending:
                raise Overloaded(f"{self._pending} requests are running or waiting (the limit is --max-pending "
                                 f"{self.max_pending}); retry later")
            self._pending += 1
        job = Job(self, loop)
        t = threading.Thread(target=self._run, args=(job, kind, payload, max_tokens, kwargs), daemon=True,
                             name="finllm-serve-job")
        try:
            t.start()
        except BaseException:
            self._release()
            raise
        return job

    def _release(self) -> None:
        with self._admit:
            self._pending -= 1

    def _start(self, kind: str, payload: Any, max_tokens: int, kwargs: dict) -> TokenStream:
        if kind == "chat":
            return self.impl.chat(payload, max_tokens, **kwargs)
        return self.impl.generate(payload, max_tokens, **kwargs)

    def _run(self, job: Job, kind: str, payload: Any, max_tokens: int | None, kwargs: dict) -> None:
        # None: until end of turn or a full context (the core stops at n_ctx with 'length').
        limit = self.n_ctx if max_tokens is None else max_tokens
        held = False
        last: Event | None = None
        try:
            if self.mode == "engine":
                while not self._engine_lock.acquire(timeout=0.05):  # requests in turn; a cancelled one leaves
                    if job.cancelled.is_set():
                        return
                held = True
            if job.cancelled.is_set():
                return
            stream = self._start(kind, payload, limit, kwargs)
            with self._state:
                job.stream, job.active = stream, True
            if job.cancelled.is_set():  # cancelled between start and becoming active
                stream.close()
            job.post(Event("started"))
            try:
                for piece in stream:
                    job.post(Event("piece", piece))
                    if job.cancelled.is_set():
                        break
            finally:
                with self._state:
                    job.active = False
                stream.close()
            c = stream.completion  # the core's token counts
            last = Event("done", finish_reason=c.finish_reason, n_prompt=c.prompt_tokens, n_gen=c.completion_tokens)
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the client as an error event
            last = Event("error", error=exc)
        finally:
            if held:
                self._engine_lock.release()
            self._release()  # before the last event: a client that got its answer finds the slot free
            if last is not None:
                job.post(last)

    def _cancel(self, job: Job) -> None:
        with self._state:
            if not job.active or job.stream is None:
                return  # not started (the worker sees job.cancelled) or already over
            if self.mode == "engine":
                self.impl.cancel()  # only this job's generation runs on the engine now
                return
            # The scheduler's per-request cancel (fe_sched_cancel: non-blocking, any thread). Not
            # TokenStream.cancel(): that ends the stream from this thread while the worker reads it.
            steps = getattr(job.stream, "_steps", None)
            if steps is not None and hasattr(steps, "cancel"):
                steps.cancel()

    def stats(self) -> dict:
        out: dict[str, Any] = {"mode": self.mode, "parallel": self.parallel, "flash_attn": self.flash_attn,
                               "reuse_generated": self.reuse_generated,
                               "pending": self._pending,
                               "max_pending": self.max_pending}
        if self.mode == "scheduler" and hasattr(self.impl, "stats"):
            out["scheduler"] = self.impl.stats()
        if self.drift is not None:
            st = self.drift.status()
            out["drift"] = {"state": st.state, "kl": st.kl, "n_requests": st.n_requests}
        return out
