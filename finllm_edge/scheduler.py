"""finllm_edge.Scheduler: many requests at once on one model, batched by the core's scheduler.

    from finllm_edge import Scheduler

    with Scheduler(n_slots=4, n_ctx=2048) as sched:              # one copy of the weights
        streams = [sched.chat([{"role": "user", "content": q}], max_tokens=64) for q in questions]
        for s in streams:                                       # or read each one on its own thread
            print("".join(s), s.completion.finish_reason, s.completion.completion_tokens)
        print(sched.stats())     # queued, active, batch_size, tokens_per_s, token_ms_p50/p99, ...

A binding of the core's fe_scheduler (native/src/scheduler.cpp; "concurrent requests" in
finllm_edge.h): one llama.cpp context with a KV sequence per slot and a decode thread that
evaluates the next token of every running request in one batch, admits queued requests while the
measured p99 inter-token latency stays under `p99_token_ms`, and refuses submissions when its
queue is full (EngineBusyError). Each request gives the same tokens as when it runs alone
(greedy and seeded). Streams are the Engine's TokenStream: iterate text pieces; `.completion`
(finish_reason, usage counts), `.cancel()` (the others are untouched), `.profile`. Every method
may be called from any thread; close() ends the running requests ('cancelled').
"""

from __future__ import annotations

import ctypes as C
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import _native
from .backend import (
    Backend,
    RunTimes,
    SamplingOptions,
    Step,
    TokenStream,
)
from .errors import FinLLMEdgeError, InvalidArgumentError
from .models import default_model_path
from .request_params import NativeRequest
from .structured import as_grammar_error

__all__ = ["Scheduler"]


class _SchedSteps:
    """The events of one request of the core's scheduler (fe_sched_next)."""

    def __init__(self, handle: C.c_void_p) -> None:
        self._h: C.c_void_p | None = handle
        self._ev = _native.TokenEvent()
        self._done = False
        self._lock = threading.Lock()

    def next(self) -> Step:
        step = self._next(-1)
        assert step is not None
        return step

    def poll(self) -> Step | None:
        """The next event if there is one now, else None (fe_sched_next_timeout with 0 ms)."""
        return self._next(0)

    def _next(self, timeout_ms: int) -> Step | None:
        L, ev = _native.lib(), self._ev
        with self._lock:
            if self._h is None or self._done:
                return Step("", -1, True, "cancelled")
            if timeout_ms < 0:
                st = L.fe_sched_next(self._h, C.byref(ev))  # waits for the decode thread (GIL released)
            else:
                st = L.fe_sched_next_timeout(self._h, C.byref(ev), timeout_ms)
                if st == _native.FE_ERR_BUSY:
                    return None
            if st != _native.FE_OK:
                self._done = True
                raise as_grammar_error(L.error(st, "generation failed"))
            text = C.string_at(ev.text, ev.text_len).decode("utf-8") if ev.text_len else ""
            if ev.done:
                self._done = True
            reason = L.fe_finish_reason(ev.stop_reason).decode() if ev.done else None
        return Step(text, ev.token, bool(ev.done), reason)

    def cancel(self) -> None:
        h = self._h
        if h is not None:
            _native.lib().fe_sched_cancel(h)

    def close(self) -> None:
        """Cancel if still running and wait for the end (the next step of the decode thread)."""
        if self._h is None or self._done:
            return
        self.cancel()
        try:
            while not self.next().done:
                pass
        except FinLLMEdgeError:
            pass

    def times(self) -> RunTimes:
        L = _native.lib()
        p = _native.Profile()
        with self._lock:
            if self._h is None:
                return RunTimes()
            st = L.fe_sched_request_get_profile(self._h, C.byref(p))
            if st != _native.FE_OK:
                return RunTimes()
            times = RunTimes(ttft_ms=p.ttft_ms, prefill_ms=p.prefill_ms, e2e_ms=p.e2e_ms, n_prompt=p.n_prompt,
                             n_gen=p.n_gen, token_ms=[p.token_ms[i] for i in range(p.n_token_ms)],
                             n_prompt_reused=p.n_prompt_reused)
            L.fe_sched_request_free(self._h)
            self._h = None
        return times

    def __del__(self) -> None:
        h, self._h = self._h, None
        if h is not None:
            try:
                _native.lib().fe_sched_request_free(h)
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


class Scheduler(Backend):
    """One model, up to `n_slots` requests decoded together. See the module docstring.

    n_ctx is per request (prompt + answer). p99_token_ms bounds the p99 inter-token latency the
    adaptive batch size keeps; max_queued bounds the requests waiting for a slot; n_batch and
    n_batch_busy are the prompt tokens a step evaluates (in chunks of the new requests, in turn)
    when nothing else decodes / while other requests decode (None: the core's, min(64, n_batch));
    a busy step also takes no more than fit in 0.8 x p99_token_ms beside its decode batch (at the
    measured costs), so a long prompt does not stall the running requests' tokens;
    seed is the default seed of sampled requests (None: random each time);
    flash_attn turns on llama.cpp's flash attention: faster decoding, and a request's tokens are a
    flash-attention session's up to 256 cells of context (at any length with n_threads=1), see
    fe_scheduler_params in finllm_edge.h; prefix_reuse (default on): a slot keeps its last prompt's
    K/V and a request whose prompt starts the same (a system prompt) evaluates only the rest, with
    the same tokens as without reuse (stream.profile["n_prompt_reused"], stats()["prompt_tokens_reused"]);
    reuse_generated (default off): the slot also keeps its answer's K/V and a request reuses every cached
    token it starts with, as Engine(reuse_generated=True) does (a chat that sends back the model's
    answers evaluates only the new message; tokens are no longer identical to a run without reuse);
    settle_answers (default on): once no request has run or waited for 100 ms, the decode thread evaluates a free
    slot's last answer again as prompt rows, so that the next turn of a chat reuses it with tokens
    still identical to a run without reuse (a submit stops it at once; stats()["settled_tokens"]).

    Reading: iterate each stream on a thread of its own (it waits for the decode thread), or read
    them all on one thread / event loop: set_wakeup_fd(fd) makes the core write to fd after each
    step, and stream.ready() takes what a stream has without waiting (what `finllm-edge serve` does)."""

    TOOL = "finllm_edge.Scheduler"
    supports_response_format = True  # grammar=, json_schema=, response_format= (the core's constrained decoding)

    def __init__(self, model_path: str | os.PathLike | None = None, n_slots: int = 4, n_ctx: int = 2048,
                 n_threads: int | None = None, p99_token_ms: float = 150.0, *, max_queued: int = 64,
                 n_batch: int = 512, n_batch_busy: int | None = None, seed: int | None = None,
                 chat_template: str | None = None, use_mmap: bool = True, flash_attn: bool = False,
                 prefix_reuse: bool = True, reuse_generated: bool = False, settle_answers: bool = True) -> None:
        super().__init__()
        self._model = self._sched = None
        self._closed = True
        self._lock = threading.RLock()  # the model and the scheduler handle: close() vs. the other calls
        L = _native.lib()
        sp = L.fe_scheduler_default_params()
        given = {"n_slots": n_slots, "n_ctx": n_ctx, "n_batch": n_batch, "max_queued": max_queued,
                 "p99_token_ms": p99_token_ms, "flash_attn": flash_attn, "prefix_reuse": prefix_reuse,
                 "reuse_generated": reuse_generated, "settle_answers": settle_answers}
        if n_batch_busy is not None:  # None: the core's, min(64, n_batch)
            given["n_batch_busy"] = n_batch_busy
        if n_threads is not None:
            given["n_threads"] = given["n_threads_batch"] = n_threads
        for name, value in given.items():
            _native.set_field(sp, name, value)
        if L.has("fe_scheduler_params_check"):  # the core's ranges, before the model loads (and again at create)
            L.check(L.fe_scheduler_params_check(C.byref(sp)), "Scheduler")
        if seed is not None:
            SamplingOptions(seed=seed).to_c()
        self.seed = seed
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        mp = L.fe_model_default_params()
        mp.use_mmap = bool(use_mmap)
        model = C.c_void_p()
        t0 = time.perf_counter()
        L.check(L.fe_model_load(os.fsencode(self.model_path), C.byref(mp), C.byref(model)),
                f"cannot load {self.model_path}")
        self._model = model
        self._closed = False
        try:
            if chat_template is not None:
                L.check(L.fe_model_set_chat_template(model, chat_template.encode("utf-8")), "chat_template")
            sched = C.c_void_p()
            L.check(L.fe_scheduler_create(model, C.byref(sp), C.byref(sched)), "cannot create the scheduler")
            self._sched = sched
        except BaseException:
            self.close()
            raise
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.n_slots = int(sp.n_slots)
        self.n_ctx = int(sp.n_ctx)
        self.n_threads = int(sp.n_threads)
        self.p99_token_ms = float(sp.p99_token_ms)
        self.flash_attn = flash_attn
        self.reuse_generated = reuse_generated

    # lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """End every request ('cancelled'), stop the decode thread, free the model. Idempotent; open
        streams stay readable and end."""
        with self._lock:
            L = _native.lib()
            if self._sched is not None:
                L.fe_scheduler_free(self._sched)
                self._sched = None
            if self._model is not None:
                L.fe_model_free(self._model)
                self._model = None
            self._closed = True

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _require(self) -> None:
        if self._closed:
            raise FinLLMEdgeError("this Scheduler is closed")

    def set_wakeup_fd(self, fd: int | None) -> None:
        """After each step that gave a request an event, the core writes 8 bytes to `fd` (a
        non-blocking pipe's write end or an eventfd): one event loop can then wait for every request
        at once and take their pieces with TokenStream.ready(). None turns it off; after that the old
        fd is no longer written and may be closed (fe_scheduler_set_wakeup_fd). POSIX only."""
        L = _native.lib()
        with self._lock:
            self._require()
            L.check(L.fe_scheduler_set_wakeup_fd(self._sched, -1 if fd is None else int(fd)),
                    "cannot set the wake-up fd")

    def stats(self) -> dict:
        """The scheduler now: queued, active, batch_size (the adaptive limit), tokens_per_s,
        token_ms_p50/p99 (recent inter-token latencies), counts of submitted/completed/cancelled/
        rejected/failed requests (fe_scheduler_stats_json)."""
        with self._lock:
            self._require()
            L = _native.lib()
            return json.loads(L.take_string(L.fe_scheduler_stats_json(self._sched), "stats"))

    # drift monitoring (finllm_edge/drift.py) ----------------------------------------------
    def enable_drift(self, reference_path: str | os.PathLike | None):
        """Monitor what this Scheduler's requests ask against a drift reference (as
        Engine.enable_drift; requests may run meanwhile): each request is counted when it is
        queued, as a session counts it. Returns the DriftMonitor (status(), state_json(), safe from
        any thread); None detaches. A refused file is a DriftReferenceError (the monitor stays)."""
        from .drift import enable_scheduler_drift

        return enable_scheduler_drift(self, reference_path)

    # tokens ------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        with self._lock:
            self._require()
            return _native.tokenize(self._model, text, add_special, parse_special)

    def count_chat_tokens(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """Prompt tokens `chat(messages)` would evaluate (template + generation prompt)."""
        with self._lock:
            self._require()
            return _native.count_chat_tokens(self._model, messages)

    # generation --------------------------------------------------------------------------
    def generate(self, prompt: str, max_tokens: int = 256, *, add_special: bool = True,
                 parse_special: bool = False, **kwargs: Any) -> TokenStream:
        """Queue a request and stream its text pieces, as Engine.generate (same options:
        temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed, sampling=, stop=,
        ignore_eos). Raises EngineBusyError when the queue is full, ContextOverflowError when the
        prompt does not fit in n_ctx, InvalidArgumentError for an option out of range."""
        if not isinstance(prompt, str):
            raise InvalidArgumentError(f"prompt must be str, got {type(prompt).__name__}")
        L = _native.lib()
        data = prompt.encode("utf-8")

        def submit(gp, out):
            gp.add_special, gp.parse_special = bool(add_special), bool(parse_special)
            return L.fe_sched_submit(self._sched, data, C.byref(gp), out)

        return self._stream(submit, max_tokens, **kwargs)

    def generate_tokens(self, tokens: Sequence[int], max_tokens: int = 256, **kwargs: Any) -> TokenStream:
        """Like generate(), from prompt token ids."""
        L = _native.lib()
        arr, n = _native.token_array(tokens)
        return self._stream(lambda gp, out: L.fe_sched_submit_tokens(self._sched, arr, n, C.byref(gp), out),
                            max_tokens, **kwargs)

    def chat(self, messages: Iterable[Mapping[str, Any]], max_tokens: int = 256, **kwargs: Any) -> TokenStream:
        """Like generate(), on the prompt the model's chat template makes of `messages`."""
        L = _native.lib()
        arr, n, keep = _native.chat_array(list(messages))
        return self._stream(lambda gp, out: L.fe_sched_submit_chat(self._sched, arr, n, C.byref(gp), out),
                            max_tokens, keep=keep, **kwargs)

    def _stream(self, submit, max_tokens: int, **kwargs: Any) -> TokenStream:
        req = NativeRequest(max_tokens, self.seed, **kwargs)
        handle = C.c_void_p()
        with self._lock:
            self._require()
            st = submit(req.gp, C.byref(handle))  # the core copies the prompt, the stop strings and the constraint
            if st != _native.FE_OK:
                raise req.error(st)
        return TokenStream(self, _SchedSteps(handle))

    # profiles ----------------------------------------------------------------------------
    def _profile_meta(self, meta: _native.ProfileMeta) -> None:
        meta.model_path = os.fsencode(self.model_path)
        with self._lock:
            meta.model = self._model
