"""What the server generates with: one class over either one `Engine` behind a lock (requests
served in turn) or the core's `Scheduler` (`--parallel N`: N sequences decoded together in one
batch by the core). Each request's events reach the loop through its Job's mailbox.

With the scheduler, the event loop reads every stream itself: the core writes to a pipe after each
step (Scheduler.set_wakeup_fd), the loop wakes once and takes each running request's pieces
without waiting (TokenStream.ready). Only the submit (tokenizing, a grammar to compile) runs on a
small thread pool. With one Engine, a worker thread per request iterates its stream (it blocks).

Admission is bounded: at most `max_pending` requests are running or waiting at once; one more
is refused at once (503), never queued without bound.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from concurrent.futures import ThreadPoolExecutor
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

    def post(self, ev: Event, *, on_loop: bool = False) -> None:
        """Hand one event to the loop (from a worker thread, or from the loop itself with on_loop)."""
        with self._lock:
            self._box.append(ev)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            if on_loop:
                _wake(waiter)
            else:
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

    def refresh(self) -> None:
        """Event loop: take what the core has for this job now (a safety net for a missed wake-up)."""
        self._backend._refresh(self)


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def _done_event(stream: TokenStream) -> Event:
    """The last event of a request that ended: its finish reason and the core's token counts."""
    c = stream.completion
    return Event("done", finish_reason=c.finish_reason, n_prompt=c.prompt_tokens, n_gen=c.completion_tokens)


class ServeBackend:
    """`parallel` == 1: one Engine, requests in turn. `parallel` > 1: finllm_edge.Scheduler with
    that many slots (each of n_ctx tokens). flash_attn None: on with parallel > 1, off with 1.
    reuse_generated: a chat's next request reuses the K/V of the answers it sends back (see Engine).
    settle (default on, with exact reuse): once a request ends and none waits, its answer is evaluated
    again as prompt rows (Engine.settle on a settler thread, stopped by the next request; the
    scheduler's settle_answers), so a chat's next turn reuses it with tokens still exact.
    n_batch: prompt tokens per decode call (the scheduler's per-step budget; while others decode the core's
    n_batch_busy, min(64, n_batch)).
    drift_ref: a drift reference file; every request is counted by the core's monitor (`drift`)."""

    def __init__(self, model_path: str | Path | None = None, *, n_ctx: int = 2048, n_threads: int | None = None,
                 parallel: int = 1, max_pending: int = 32, flash_attn: bool | None = None,
                 reuse_generated: bool = False, drift_ref: str | Path | None = None, n_batch: int = 512,
                 settle: bool = True) -> None:
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
                                       n_batch=n_batch, settle_answers=settle)
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
        # the scheduler's streams, read on one event loop (see the module docstring)
        self._wake_loop: asyncio.AbstractEventLoop | None = None
        self._wake_fds: tuple[int, int] | None = None
        self._live: set[Job] = set()   # adopted jobs whose streams run (loop thread only)
        self._pool: ThreadPoolExecutor | None = None
        self.model_path = Path(getattr(self.impl, "model_path", model_path or ""))
        self.n_ctx = n_ctx
        self.flash_attn = flash_attn
        self.reuse_generated = reuse_generated
        self.settle = settle and not reuse_generated  # reuse_generated reuses the answers as they are
        # Engine mode's settler: jobs waiting for the engine, whether a settle runs, tokens settled
        self._waiting = 0
        self._settling = False
        self._settled_tokens = 0
        self._settle_due = threading.Event()
        self._settler: threading.Thread | None = None
        self._closing = False
        if self.mode == "engine" and self.settle:
            self._settler = threading.Thread(target=self._settle_loop, daemon=True, name="finllm-serve-settle")
            self._settler.start()

    def _settle_loop(self) -> None:
        """Engine mode: after a request ends, while no other waits, Engine.settle() evaluates the
        answer again as prompt rows; a request that arrives meanwhile cancels it (see _run)."""
        from finllm_edge import _native
        from finllm_edge.errors import CancelledError

        idle_s = _native.lib().fe_settle_idle_ms() / 1e3  # the core's rule (the Scheduler's idle wait)
        while True:
            self._settle_due.wait()
            self._settle_due.clear()
            if not self._closing and self._settle_due.wait(idle_s):
                continue  # another request ended meanwhile: idle from now on
            with self._state:
                if self._closing:
                    return
                if self._waiting or not self._engine_lock.acquire(blocking=False):
                    continue
                self._settling = True
            try:
                n = self.impl.settle()
                with self._state:
                    self._settled_tokens += n
            except CancelledError:
                pass  # a request arrived: it evaluates what is left
            except Exception:  # noqa: BLE001 - a failed settle only loses the speed-up
                pass
            finally:
                with self._state:
                    self._settling = False
                self._engine_lock.release()

    def _stop_settler(self) -> None:
        if self._settler is None:
            return
        with self._state:
            self._closing = True
            if self._settling:
                self.impl.cancel()
        self._settle_due.set()  # wakes the settler, which finds _closing
        self._settler.join()
        self._settler = None

    @property
    def response_format_supported(self) -> bool:
        """Whether the backend takes OpenAI's response_format (constrained decoding in the core).
        generate()/chat() pass their keywords to _stream(), whose signature lists the options."""
        stream = getattr(self.impl, "_stream", None)
        return stream is not None and "response_format" in inspect.signature(stream).parameters

    def close(self) -> None:
        self._stop_settler()
        self._detach()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
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
        if self.mode == "scheduler" and self._attach(loop):
            try:
                loop.run_in_executor(self._pool, self._submit_polled, job, kind, payload, max_tokens, kwargs)
            except BaseException:
                self._release()
                raise
            return job
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
                with self._state:  # a settle in progress gives way at once
                    self._waiting += 1
                    if self._settling:
                        self.impl.cancel()
                try:
                    while not self._engine_lock.acquire(timeout=0.05):  # requests in turn; a cancelled one leaves
                        if job.cancelled.is_set():
                            return
                finally:
                    with self._state:
                        self._waiting -= 1
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
            last = _done_event(stream)
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the client as an error event
            last = Event("error", error=exc)
        finally:
            if held:
                self._engine_lock.release()
                if self._settler is not None:
                    self._settle_due.set()
            self._release()  # before the last event: a client that got its answer finds the slot free
            if last is not None:
                job.post(last)

    # ---- the scheduler's streams on the event loop -------------------------------------
    def _attach(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Read the scheduler's streams on `loop` (True), or False when another running loop already
        does (that loop's requests then go by worker threads)."""
        if self._wake_loop is loop:
            return True
        if self._wake_loop is not None:
            if self._wake_loop.is_running() and not self._wake_loop.is_closed():
                return False
            self._detach()
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        try:
            self.impl.set_wakeup_fd(w)
            loop.add_reader(r, self._pump)
        except BaseException:
            self.impl.set_wakeup_fd(None)
            os.close(r)
            os.close(w)
            raise
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="finllm-serve-submit")
        self._wake_loop, self._wake_fds = loop, (r, w)
        return True

    def _detach(self) -> None:
        loop, fds = self._wake_loop, self._wake_fds
        self._wake_loop, self._wake_fds = None, None
        if fds is None:
            return
        self.impl.set_wakeup_fd(None)  # the core writes to it no more
        if loop is not None and not loop.is_closed():
            try:
                loop.remove_reader(fds[0])
            except (RuntimeError, ValueError):
                pass
        os.close(fds[0])
        os.close(fds[1])

    def _submit_polled(self, job: Job, kind: str, payload: Any, max_tokens: int | None, kwargs: dict) -> None:
        """Pool thread: submit to the core, then hand the stream to the loop."""
        limit = self.n_ctx if max_tokens is None else max_tokens
        if job.cancelled.is_set():
            self._release()
            return
        try:
            stream = self._start(kind, payload, limit, kwargs)
        except BaseException as exc:  # noqa: BLE001 - refused by the core: an error event for the client
            self._release()
            job.post(Event("error", error=exc))
            return
        try:
            job._loop.call_soon_threadsafe(self._adopt, job, stream)
        except RuntimeError:  # the loop has closed: nobody reads this request
            self._release()
            stream.close()

    def _adopt(self, job: Job, stream: TokenStream) -> None:
        with self._state:
            job.stream, job.active = stream, True
        self._live.add(job)
        job.post(Event("started"), on_loop=True)
        if job.cancelled.is_set():  # cancelled while it was being submitted
            self._cancel(job)
        self._drain(job)

    def _pump(self) -> None:
        """Event loop, on a wake-up from the core: every running request's new pieces."""
        fds = self._wake_fds
        if fds is not None:
            try:
                while os.read(fds[0], 4096):
                    pass
            except BlockingIOError:
                pass
        for job in list(self._live):
            self._drain(job)

    def _refresh(self, job: Job) -> None:
        if job in self._live:
            self._drain(job)

    def _drain(self, job: Job) -> None:
        stream = job.stream
        assert stream is not None
        last: Event | None = None
        try:
            for piece in stream.ready():
                job.post(Event("piece", piece), on_loop=True)
            if stream.ended:
                last = _done_event(stream)
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the client as an error event
            last = Event("error", error=exc)
        if last is not None:
            self._live.discard(job)
            with self._state:
                job.active = False
            self._release()  # before the last event: a client that got its answer finds the slot free
            job.post(last, on_loop=True)

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
                               "settle": self.settle,
                               "pending": self._pending,
                               "max_pending": self.max_pending}
        if self.mode == "scheduler" and hasattr(self.impl, "stats"):
            out["scheduler"] = self.impl.stats()
        else:
            out["settled_tokens"] = self._settled_tokens
        if self.drift is not None:
            st = self.drift.status()
            out["drift"] = {"state": st.state, "kl": st.kl, "n_requests": st.n_requests}
        return out
