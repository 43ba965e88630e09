"""Runtime LoRA adapters on an Engine: one base model, several adapters, swapped between requests.

    with Engine("base-q4_0.gguf") as engine:
        research = engine.load_adapter("research.gguf")
        credit = engine.load_adapter("credit.gguf")
        engine.set_adapters(research)                      # scale 1
        engine.generate("...")
        engine.set_adapters({credit: 1.0, research: 0.5})  # several at once, with scales
        engine.set_adapters(None)                          # the plain base again

A binding of the core's "runtime LoRA adapters" (native/src/adapter.cpp): the checks of an
adapter file, the scale range, and what a change of the active set does to the KV cache
(it is emptied: the next request evaluates its whole prompt) and to saved state files (they
record the set) are the core's.
"""

from __future__ import annotations

import ctypes as C
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Union

from . import _native
from .errors import AdapterFileError, FinLLMEdgeError, InvalidArgumentError

__all__ = ["Adapter", "AdapterInfo", "AdapterMixin"]


@dataclass(frozen=True)
class AdapterInfo:
    name: str
    sha256: str
    n_tensors: int      # adapted base weights
    rank_max: int
    alpha: float        # 0: the scaling is folded into lora_b
    size_bytes: int
    load_ms: float


class Adapter:
    """A loaded adapter (owned by the Engine that loaded it; close() or Engine.close() frees it)."""

    def __init__(self, engine: "AdapterMixin", handle: C.c_void_p, path: Path) -> None:
        self._engine = engine
        self._handle: C.c_void_p | None = handle
        self.path = path
        info = _native.AdapterInfo()
        _native.lib().check(_native.lib().fe_adapter_get_info(handle, C.byref(info)), "adapter info")
        self.info = AdapterInfo(info.name.decode("utf-8", "replace"), info.sha256.decode(), int(info.n_tensors),
                                int(info.rank_max), float(info.alpha), int(info.size_bytes), float(info.load_ms))

    @property
    def closed(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        """Release the adapter (idempotent). Still active on the Engine: it stays in use until the set changes."""
        if self._handle is not None:
            _native.lib().fe_adapter_free(self._handle)
            self._handle = None
            if self in self._engine._loaded_adapters:
                self._engine._loaded_adapters.remove(self)

    def __repr__(self) -> str:
        return f"Adapter({self.info.name!r}, {self.info.n_tensors} tensors, rank {self.info.rank_max})"


AdapterSet = Union[None, Adapter, Iterable[Adapter], Mapping[Adapter, float]]


class AdapterMixin:
    """Engine methods for runtime adapters (the Engine provides _model, _session, _lock, _require)."""

    _loaded_adapters: list[Adapter]

    def load_adapter(self, path: str | os.PathLike) -> Adapter:
        """Load a GGUF LoRA adapter for this Engine's model (`finllm-edge convert --adapter-gguf` writes
        them). A file for another base, corrupt or of an unsupported kind is refused with AdapterFileError;
        a missing file is ModelNotFoundError."""
        self._require()
        L = _native.lib()
        handle = C.c_void_p()
        with self._lock:
            st = L.fe_adapter_load(self._model, os.fsencode(os.fspath(path)), C.byref(handle))
        if st == -3:
            raise AdapterFileError(L.error(st).args[0])
        L.check(st, "load_adapter")
        adapter = Adapter(self, handle, Path(path))
        self._loaded_adapters.append(adapter)
        return adapter

    def set_adapters(self, adapters: AdapterSet) -> None:
        """Make `adapters` the active set for the next requests: None (the plain base), one Adapter
        (scale 1), a list of Adapters (scale 1 each) or {Adapter: scale}. A different set empties
        the KV cache (prefix reuse starts over); the same set again keeps it."""
        self._require()
        if adapters is None:
            pairs: list[tuple[Adapter, float]] = []
        elif isinstance(adapters, Adapter):
            pairs = [(adapters, 1.0)]
        elif isinstance(adapters, Mapping):
            pairs = list(adapters.items())
        else:
            pairs = [(a, 1.0) for a in adapters]
        for a, s in pairs:
            if not isinstance(a, Adapter) or a._engine is not self:
                raise InvalidArgumentError(f"{a!r} is not an adapter loaded by this Engine (use load_adapter)")
            if a.closed:
                raise InvalidArgumentError(f"{a!r} was closed")
            if isinstance(s, bool) or not isinstance(s, (int, float)):
                raise InvalidArgumentError(f"the scale of {a!r} must be a number, got {s!r}")
        n = len(pairs)
        handles = (C.c_void_p * max(1, n))(*[a._handle for a, _ in pairs])
        scales = (C.c_float * max(1, n))(*[float(s) for _, s in pairs])
        L = _native.lib()
        with self._lock:
            L.check(L.fe_session_set_adapters(self._session, handles, scales, n), "set_adapters")

    @property
    def active_adapters(self) -> dict[Adapter, float]:
        """The active set (scale != 0) as {Adapter: scale}."""
        self._require()
        L = _native.lib()
        n = C.c_size_t(0)
        handles = (C.c_void_p * 16)()
        scales = (C.c_float * 16)()
        with self._lock:
            L.check(L.fe_session_get_adapters(self._session, handles, scales, 16, C.byref(n)))
        by_handle = {a._handle.value: a for a in self._loaded_adapters if a._handle is not None}
        out = {}
        for i in range(n.value):
            a = by_handle.get(handles[i])
            if a is None:
                raise FinLLMEdgeError("an active adapter was closed; set_adapters() to change the set")
            out[a] = float(scales[i])
        return out

    def _free_adapters(self) -> None:
        """After the session is freed, before the model: release every adapter still loaded."""
        for a in list(self._loaded_adapters):
            a.close()
