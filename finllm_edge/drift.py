"""Drift monitoring: KL divergence of what users ask against the text the model was tuned on.

    from finllm_edge import Engine
    from finllm_edge.drift import DriftReference, DriftMonitor

    with Engine("out/convert/model-q4_0.gguf") as engine:
        monitor = engine.enable_drift("out/convert/drift-ref.fedrift")  # refused for another tokenizer
        engine.chat([...]).text()
        print(monitor.status().state, monitor.status().kl)           # "none" | "watch" | "drift"
        Path("drift-state.json").write_text(monitor.state_json())     # for `finllm-edge drift report`

    Scheduler(...).enable_drift(path) attaches the same monitor to concurrent requests: each
    request is counted on the thread that submits it, and status()/state_json() may be read
    from any thread meanwhile (`finllm-edge serve --drift-ref`, GET /v1/drift).

A binding: the buckets, the window, the KL, the thresholds and their calibration are the core's
(native/src/drift_ref.cpp, drift_monitor.cpp), the same code the phone runs through JNI. The
monitor keeps bucket counts only; sampled prompts (token ids) are kept only after
set_sampling(), an explicit opt-in.
"""

from __future__ import annotations

import contextlib
import ctypes as C
import json
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from . import _native
from .errors import DriftReferenceError, InvalidArgumentError

__all__ = ["DriftParams", "DriftStatus", "DriftReference", "DriftMonitor", "tokenizer_sha256", "STATES"]

STATES = ("none", "watch", "drift")
FE_ERR_BAD_MODEL = -3


@dataclass(frozen=True)
class DriftParams:
    """How a reference folds tokens and how long the monitor's window is. None = the core's default."""

    n_buckets: int | None = None
    n_named: int | None = None
    window_tokens: int | None = None
    smoothing: float | None = None

    def to_c(self) -> _native.DriftParams:
        p = _native.lib().fe_drift_default_params()
        for k in ("n_buckets", "n_named", "window_tokens", "smoothing"):
            v = getattr(self, k)
            if v is not None:
                setattr(p, k, v)
        return p


@dataclass(frozen=True)
class DriftStatus:
    state: str                  # "none" | "watch" | "drift"
    kl: float                   # KL(window || reference), nats, after the last request
    watch_threshold: float
    drift_threshold: float
    window_tokens: int
    n_window: int
    n_requests: int
    n_tokens: int
    n_evaluations: int
    n_watch: int
    n_drift: int
    first_drift_request: int    # -1: never
    first_drift_tokens: int

    @classmethod
    def from_c(cls, s: _native.DriftStatus) -> "DriftStatus":
        return cls(STATES[s.state], s.kl, s.watch_threshold, s.drift_threshold, s.window_tokens, s.n_window,
                   s.n_requests, s.n_tokens, s.n_evaluations, s.n_watch, s.n_drift, s.first_drift_request,
                   s.first_drift_tokens)


def _check_ref(status: int, what: str) -> None:
    L = _native.lib()
    if status == FE_ERR_BAD_MODEL:
        raise DriftReferenceError(L.error(status).args[0])
    L.check(status, what)


def _int32_array(tokens: Sequence[int]) -> tuple[C.Array, int]:
    arr = np.ascontiguousarray(np.asarray(tokens, dtype=np.int64))
    if arr.ndim != 1:
        raise InvalidArgumentError("tokens must be a flat sequence of ids")
    if arr.size and (arr.min() < -(2**31) or arr.max() >= 2**31):
        raise InvalidArgumentError("a token id is outside the int32 range")
    a32 = arr.astype(np.int32)
    return (C.c_int32 * max(1, a32.size)).from_buffer_copy(a32.tobytes() or b"\0\0\0\0"), int(a32.size)


def tokenizer_sha256(engine) -> str:
    """The tokenizer identity a reference is bound to (fe_model_tokenizer_sha256 of an Engine's model)."""
    engine._require()
    L = _native.lib()
    buf = C.create_string_buffer(65)
    L.check(L.fe_model_tokenizer_sha256(engine._model, buf), "tokenizer_sha256")
    return buf.value.decode()


class DriftReference:
    """A reference distribution + calibrated thresholds (fe_drift_ref). close() is idempotent."""

    def __init__(self, handle: C.c_void_p) -> None:
        self._h = handle

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DriftReference":
        """Read a reference file; DriftReferenceError when refused, ModelNotFoundError when missing."""
        h = C.c_void_p()
        _check_ref(_native.lib().fe_drift_ref_load(os.fsencode(os.fspath(path)), C.byref(h)), f"load {path}")
        return cls(h)

    @classmethod
    def build(cls, tokenizer_sha: str, n_vocab: int, tokens: Sequence[int],
              params: DriftParams | None = None) -> "DriftReference":
        """An uncalibrated reference from the tuning text's token ids."""
        arr, n = _int32_array(tokens)
        p = (params or DriftParams()).to_c()
        h = C.c_void_p()
        _native.lib().check(_native.lib().fe_drift_ref_build(tokenizer_sha.encode(), int(n_vocab), arr, n, C.byref(p),
                                                             C.byref(h)), "drift reference")
        return cls(h)

    def _handle(self) -> C.c_void_p:
        if not self._h:
            raise InvalidArgumentError("this DriftReference is closed")
        return self._h

    def window_kls(self, requests: Iterable[Sequence[int]], n_windows: int, seed: int) -> np.ndarray:
        """KL after each request of a seeded stream drawn from `requests` (token id lists), full windows only."""
        reqs = [list(r) for r in requests]
        flat = [t for r in reqs for t in r]
        toks, _ = _int32_array(flat)
        lens, n_req = _int32_array([len(r) for r in reqs])
        if n_windows < 1:
            raise InvalidArgumentError(f"n_windows = {n_windows}: use 1 or more")
        out = (C.c_double * n_windows)()
        _native.lib().check(_native.lib().fe_drift_ref_window_kls(self._handle(), toks, lens, n_req,
                                                                  C.c_uint64(seed), out, n_windows), "window_kls")
        return np.frombuffer(out, dtype=np.float64).copy()

    def calibrate(self, kls: Sequence[float], watch_rate: float, drift_rate: float, seed: int) -> None:
        v = np.ascontiguousarray(np.asarray(kls, dtype=np.float64))
        arr = (C.c_double * max(1, v.size)).from_buffer_copy(v.tobytes() or bytes(8))
        _native.lib().check(_native.lib().fe_drift_ref_calibrate(self._handle(), arr, v.size, float(watch_rate),
                                                                 float(drift_rate), C.c_uint64(seed)), "calibrate")

    def save(self, path: str | os.PathLike) -> None:
        _native.lib().check(_native.lib().fe_drift_ref_save(self._handle(), os.fsencode(os.fspath(path))),
                            f"save {path}")

    def info(self) -> dict:
        i = _native.DriftRefInfo()
        _native.lib().check(_native.lib().fe_drift_ref_get_info(self._handle(), C.byref(i)))
        return {"tokenizer_sha256": i.tokenizer_sha256.decode(), "n_vocab": i.n_vocab,
                "n_buckets": i.params.n_buckets, "n_named": i.params.n_named,
                "window_tokens": i.params.window_tokens, "smoothing": i.params.smoothing,
                "watch_threshold": i.watch_threshold, "drift_threshold": i.drift_threshold,
                "watch_rate": i.watch_rate, "drift_rate": i.drift_rate, "n_ref_tokens": i.n_ref_tokens,
                "n_calibration_windows": i.n_calibration_windows, "calibration_seed": i.calibration_seed}

    def bucket(self, token: int) -> int:
        return int(_native.lib().fe_drift_ref_bucket(self._handle(), int(token)))

    def close(self) -> None:
        if self._h:
            _native.lib().fe_drift_ref_free(self._h)
            self._h = None

    def __enter__(self) -> "DriftReference":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class DriftMonitor:
    """The core's monitor: stand-alone (DriftMonitor(reference)), an Engine's (Engine.enable_drift)
    or a Scheduler's (Scheduler.enable_drift)."""

    def __init__(self, reference: DriftReference | None = None, *,
                 _attached: Callable[[], contextlib.AbstractContextManager[int]] | None = None) -> None:
        self._own = None
        self._attached = _attached  # yields the owner's monitor handle while the owner cannot close
        if _attached is None:
            if reference is None:
                raise InvalidArgumentError("DriftMonitor needs a DriftReference")
            h = C.c_void_p()
            _native.lib().check(_native.lib().fe_drift_monitor_new(reference._handle(), C.byref(h)), "DriftMonitor")
            self._own = h

    @contextlib.contextmanager
    def _use(self) -> Iterator[int]:
        if self._attached is not None:
            with self._attached() as h:
                yield h
            return
        if not self._own:
            raise InvalidArgumentError("this DriftMonitor is closed")
        yield self._own

    def observe(self, tokens: Sequence[int]) -> DriftStatus:
        """Count one request's token ids, then evaluate the KL and the state."""
        arr, n = _int32_array(tokens)
        with self._use() as h:
            _native.lib().check(_native.lib().fe_drift_observe(h, arr, n), "observe")
        return self.status()

    def status(self) -> DriftStatus:
        s = _native.DriftStatus()
        with self._use() as h:
            _native.lib().check(_native.lib().fe_drift_get_status(h, C.byref(s)))
        return DriftStatus.from_c(s)

    def state_json(self) -> str:
        """The monitor's state as JSON (counts, thresholds, KL history; samples only when opted in)."""
        L = _native.lib()
        with self._use() as h:
            return L.take_string(L.fe_drift_monitor_json(h), "drift state")

    def state(self) -> dict:
        return json.loads(self.state_json())

    def set_sampling(self, max_samples: int, every_n: int = 1) -> None:
        """Opt in to keeping the token ids of every `every_n`-th request (the last `max_samples`)."""
        with self._use() as h:
            _native.lib().check(_native.lib().fe_drift_monitor_set_sampling(h, int(max_samples), int(every_n)),
                                "set_sampling")

    def reset(self) -> None:
        with self._use() as h:
            _native.lib().fe_drift_monitor_reset(h)

    def close(self) -> None:
        if self._own:
            _native.lib().fe_drift_monitor_free(self._own)
            self._own = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _path_arg(path: str | os.PathLike | None) -> bytes | None:
    return None if path is None else os.fsencode(os.fspath(path))


def enable_drift(engine, path: str | os.PathLike | None) -> DriftMonitor | None:
    """Attach a monitor on the reference file at `path` to an Engine's session (None detaches)."""
    engine._require()
    L = _native.lib()
    with engine._lock:
        _check_ref(L.fe_session_enable_drift(engine._session, _path_arg(path)), f"enable_drift({path})")

    @contextlib.contextmanager
    def attached() -> Iterator[int]:
        engine._require()
        yield _attached_handle(L.fe_session_drift_monitor(engine._session), "Engine")

    return None if path is None else DriftMonitor(_attached=attached)


def enable_scheduler_drift(sched, path: str | os.PathLike | None) -> DriftMonitor | None:
    """Attach a monitor on the reference file at `path` to a Scheduler (None detaches); requests
    may run meanwhile."""
    L = _native.lib()
    with sched._lock:
        sched._require()
        _check_ref(L.fe_scheduler_enable_drift(sched._sched, _path_arg(path)), f"enable_drift({path})")

    @contextlib.contextmanager
    def attached() -> Iterator[int]:
        with sched._lock:  # close() cannot free the monitor while it is in use
            sched._require()
            yield _attached_handle(L.fe_scheduler_drift_monitor(sched._sched), "Scheduler")

    return None if path is None else DriftMonitor(_attached=attached)


def _attached_handle(h: int | None, owner: str) -> int:
    if not h:
        raise InvalidArgumentError(f"the {owner} has no drift monitor (enable_drift first)")
    return h
