"""The one backend protocol: options, the token stream, completions and profiles, shared by
the GGUF engine (finllm_edge.Engine, the C core) and the ONNX engine (onnxruntime-genai).

A backend only provides *steps*: a `Steps` object whose `next()` returns one `Step` (text
that became final, the token id, and whether and why the generation ended). Everything a
caller sees on top of that (iteration, `.text`, `.tokens`, `.finish_reason`, closing,
`complete()`, the LatencyProfile) is written here once. The rules under the steps live in
the core: stop strings and UTF-8 (fe_text_stream), sampling defaults
(fe_sampling_default_params), finish reasons (fe_finish_reason), profiles (fe_profile_json).
"""

from __future__ import annotations

import ctypes as C
import json
import threading
from dataclasses import dataclass, fields
from typing import Any, Protocol, Sequence

from . import _native
from .errors import FinLLMEdgeError, InvalidArgumentError


@dataclass(frozen=True)
class SamplingOptions:
    """Sampling of one request. None = the core's default (fe_sampling_default_params():
    greedy, top_k 40, top_p 0.95, min_p 0.05, no repeat penalty, a random seed).
    temperature 0 is greedy (top_k/top_p/min_p are then unused)."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    seed: int | None = None

    def merged(self, **changes: Any) -> "SamplingOptions":
        set_ = {k: v for k, v in changes.items() if v is not None}
        return SamplingOptions(**{f.name: set_.get(f.name, getattr(self, f.name)) for f in fields(self)})

    def to_c(self, default_seed: int | None = None) -> _native.SamplingParams:
        """The core's defaults with what is set here; checked by the core (range errors name the field)."""
        L = _native.lib()
        p = L.fe_sampling_default_params()
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "seed":
                v = v if v is not None else default_seed
                if v is None:
                    continue
                if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 0xFFFFFFFF:
                    raise InvalidArgumentError(f"seed = {v!r} is out of range: use an integer 0..4294967295")
            elif v is None:
                continue
            elif isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InvalidArgumentError(f"{f.name} = {v!r} must be a number")
            setattr(p, f.name, v)
        L.check(L.fe_sampling_check(C.byref(p)))
        return p


@dataclass(frozen=True)
class GenerationOptions:
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # benchmarks: always generate max_tokens


def normalize_stop(stop: Sequence[str] | str | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = (stop,)
    out = []
    for s in stop:
        if not isinstance(s, str):
            raise InvalidArgumentError(f"stop strings must be str, got {type(s).__name__}")
        if s:
            out.append(s)
    return tuple(out)


def check_max_tokens(max_tokens: Any) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise InvalidArgumentError(f"max_tokens = {max_tokens!r} is out of range: use an integer >= 0")
    return max_tokens


@dataclass(frozen=True)
class Step:
    text: str              # text that became final with this step (may be empty)
    token: int             # the token sampled in this step, -1 if none
    done: bool = False
    finish_reason: str | None = None  # 'stop' | 'length' | 'cancelled' when done


@dataclass
class RunTimes:
    """One generation's timings, in the core's fe_run_timing terms."""

    ttft_ms: float = 0.0
    prefill_ms: float = 0.0
    e2e_ms: float = 0.0
    n_prompt: int = 0
    n_gen: int = 0
    token_ms: list[float] | None = None
    n_prompt_reused: int = 0  # prompt tokens reused from the KV cache (prefix reuse), not evaluated


class Steps(Protocol):
    def next(self) -> Step: ...
    def close(self) -> None: ...
    def times(self) -> RunTimes: ...


class TokenStream:
    """Iterator of text pieces of one generation (valid UTF-8, stop strings removed).

    After it ends: `.text`, `.tokens`, `.finish_reason` ('stop' for end of turn or a stop
    string, 'length' for max_tokens or a full context, 'cancelled' for cancel()/close()),
    `.profile` (the LatencyProfile). Breaking out of a for loop and dropping the stream, or
    `close()`, ends the generation and frees the engine for the next one."""

    def __init__(self, backend: "Backend", steps: Steps) -> None:
        self._backend = backend
        self._steps: Steps | None = steps
        self.text = ""
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self._times: RunTimes | None = None
        self._profile: dict | None = None

    def __iter__(self) -> "TokenStream":
        return self

    def __next__(self) -> str:
        while self._steps is not None:
            text = self._take(self._steps.next())
            if text:
                return text
        raise StopIteration

    def ready(self) -> list[str]:
        """The text pieces that are available now, without waiting; [] when none is. For streams
        whose steps can be polled (the Scheduler's: an event loop reads many streams on one thread,
        woken by Scheduler.set_wakeup_fd). `ended` tells when the last one was taken."""
        poll = getattr(self._steps, "poll", None)
        if self._steps is not None and poll is None:
            raise FinLLMEdgeError("this stream cannot be polled; iterate it")
        out: list[str] = []
        while self._steps is not None:
            step = poll()
            if step is None:
                break
            text = self._take(step)
            if text:
                out.append(text)
        return out

    @property
    def ended(self) -> bool:
        return self._steps is None

    def _take(self, step: Step) -> str:
        if step.token >= 0:
            self.tokens.append(step.token)
        self.text += step.text
        if step.done:
            self._end(step.finish_reason or "cancelled")
        return step.text

    def _end(self, reason: str) -> None:
        steps, self._steps = self._steps, None
        if steps is not None:
            self.finish_reason = reason
            steps.close()
            self._times = steps.times()
            self._backend._finished(self._times)

    def close(self) -> None:
        """End the generation now (finish_reason 'cancelled' if it was still running)."""
        self._end("cancelled")

    cancel = close

    @property
    def completion(self) -> "Completion":
        """The whole generation (after it ended; iterate or close() first): text, tokens,
        finish_reason and the usage counts (prompt_tokens, completion_tokens)."""
        if self._times is None:
            raise FinLLMEdgeError("the generation has not finished; iterate it to the end (or close it) first")
        return Completion(text=self.text, tokens=list(self.tokens), finish_reason=self.finish_reason or "cancelled",
                          profile=None, prompt_tokens=int(self._times.n_prompt),
                          completion_tokens=int(self._times.n_gen))

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    @property
    def profile(self) -> dict:
        """LatencyProfile of this generation (after it ended)."""
        if self._times is None:
            raise FinLLMEdgeError("the generation has not finished; iterate it to the end (or close it) first")
        if self._profile is None:
            self._profile = self._backend._profile_for([self._times])
        return self._profile


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: list[int]
    finish_reason: str
    profile: dict | None = None
    prompt_tokens: int = 0      # usage: prompt tokens evaluated or reused
    completion_tokens: int = 0  # usage: tokens generated (an end-of-turn token not counted)


class Backend:
    """What both engines share: completions, last_profile, and the profile writer call."""

    TOOL = "finllm_edge"
    n_threads: int
    n_ctx: int

    def __init__(self) -> None:
        self._last_runs: list[RunTimes] = []
        self._last_warmup = 0
        self._last_thermal_before: str | None = None
        self._last_profile: dict | None = None
        self._last_lock = threading.Lock()

    # what a backend provides ------------------------------------------------------------
    def _profile_meta(self, meta: _native.ProfileMeta) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # lifecycle, shared --------------------------------------------------------------------
    _closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # shared -----------------------------------------------------------------------------
    def _finished(self, times: RunTimes) -> None:
        with self._last_lock:
            self._last_runs, self._last_warmup, self._last_thermal_before = [times], 0, None
            self._last_profile = None

    def _profile_for(self, runs: list[RunTimes], warmup: int = 0, thermal_before: str | None = None) -> dict:
        L = _native.lib()
        keep: list = []
        arr = (_native.RunTiming * len(runs))()
        for i, r in enumerate(runs):
            lat = (C.c_double * max(1, len(r.token_ms or [])))(*(r.token_ms or []))
            keep.append(lat)
            arr[i] = _native.RunTiming(r.ttft_ms, r.prefill_ms, r.e2e_ms, r.n_prompt, r.n_gen,
                                       C.cast(lat, C.POINTER(C.c_double)), len(r.token_ms or []),
                                       r.n_prompt_reused)
        meta = L.fe_profile_default_meta()
        meta.tool = self.TOOL.encode()
        meta.n_threads = int(self.n_threads)
        meta.n_ctx = int(self.n_ctx)
        meta.warmup = int(warmup)
        meta.thermal_before_json = thermal_before.encode() if thermal_before else None
        self._profile_meta(meta)
        text = L.take_string(L.fe_profile_json(arr, len(runs), C.byref(meta)), "fe_profile_json")
        return json.loads(text)

    @property
    def last_profile(self) -> dict | None:
        """LatencyProfile of the last finished generation or benchmark (None before the first)."""
        with self._last_lock:
            runs, warmup, before, cached = (self._last_runs, self._last_warmup, self._last_thermal_before,
                                            self._last_profile)
        if not runs:
            return None
        if cached is None:
            cached = self._profile_for(runs, warmup, before)
            with self._last_lock:
                self._last_profile = cached
        return cached

    def _set_benchmark(self, runs: list[RunTimes], warmup: int, thermal_before: str | None) -> dict:
        with self._last_lock:
            self._last_runs, self._last_warmup, self._last_thermal_before = runs, warmup, thermal_before
            self._last_profile = None
        return self.last_profile

    def generate(self, prompt: str, max_tokens: int = 256, **kwargs: Any) -> TokenStream:
        raise NotImplementedError

    def complete(self, prompt: str, max_tokens: int = 256, **kwargs: Any) -> Completion:
        """Non-streaming: the whole answer at once, with its profile."""
        stream = self.generate(prompt, max_tokens, **kwargs)
        try:
            for _ in stream:
                pass
        finally:
            stream.close()
        c = stream.completion
        return Completion(text=c.text, tokens=c.tokens, finish_reason=c.finish_reason, profile=stream.profile,
                          prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens)

