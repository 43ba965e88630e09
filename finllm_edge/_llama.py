"""Layer 2: small owning wrappers over llama-cpp-python's low-level ctypes bindings.

Layer 1 is `llama_cpp.llama_cpp` (the C API, one ctypes function per symbol).
Layer 3 is `finllm_edge.engine.Engine`. Every wrapper here owns exactly one native
object, frees it in `close()` (idempotent, also called by `__exit__` and `__del__`),
and raises a typed error (finllm_edge.errors) instead of returning NULL.

llama.cpp's log goes to a ring buffer instead of stderr (set FINLLM_EDGE_VERBOSE=1 to
see it); its last error lines are appended to the messages of load/decode failures.
"""

from __future__ import annotations

import collections
import ctypes
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import llama_cpp as lc  # layer 1: the pinned llama-cpp-python's ctypes bindings
import llama_cpp.llama_cpp as _bindings  # its loaded libllama (_lib), for symbols it does not bind

from .errors import ContextOverflowError, CorruptModelError, FinLLMEdgeError, ModelNotFoundError
from .gguf_validate import GGUFValidationError, validate_file

GGUF_MAGIC = b"GGUF"

# ggml_log_level: 0 none, 1 info, 2 warn, 3 error, 4 debug, 5 cont
_LOG_ERROR_LEVELS = (2, 3)


class _LogCapture:
    """Process-wide llama.cpp log sink: keeps the last lines, prints only when verbose."""

    def __init__(self, keep: int = 64) -> None:
        self.lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=keep)
        self.verbose = os.environ.get("FINLLM_EDGE_VERBOSE", "") not in ("", "0")
        self._last_level = 1
        self._lock = threading.Lock()
        # Keep a reference: ctypes would free the trampoline otherwise.
        self._callback = lc.llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes, _user: ctypes.c_void_p) -> None:
        try:
            msg = text.decode("utf-8", errors="replace") if text else ""
            if level == 5:  # continuation of the previous line
                level = self._last_level
            self._last_level = level
            with self._lock:
                if msg.strip():
                    self.lines.append((level, msg.rstrip("\n")))
            if self.verbose:
                sys.stderr.write(msg)
        except Exception:  # never let an exception cross the C boundary
            pass

    def install(self) -> None:
        lc.llama_log_set(self._callback, ctypes.c_void_p(0))

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)

    def errors_since_start(self, n: int = 4) -> str:
        """The last `n` warning/error lines, joined, for error messages."""
        with self._lock:
            errs = [m for lvl, m in self.lines if lvl in _LOG_ERROR_LEVELS]
        return " | ".join(errs[-n:])


_backend_lock = threading.Lock()
_backend_ready = False
LOG = _LogCapture()


def ensure_backend() -> None:
    """llama_backend_init once per process, with the log silenced first."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            LOG.install()
            lc.llama_backend_init()
            _backend_ready = True
        else:
            LOG.install()  # someone (e.g. llama_cpp.Llama) may have replaced it


def _with_log(msg: str) -> str:
    tail = LOG.errors_since_start()
    return f"{msg} (llama.cpp: {tail})" if tail else msg


def check_gguf_file(path: Path) -> None:
    """ModelNotFoundError / CorruptModelError (GGUFValidationError naming the field) before llama.cpp sees the file."""
    if not path.exists():
        raise ModelNotFoundError(f"model file not found: {path}. Pass the path of a .gguf file.")
    if not path.is_file():
        raise ModelNotFoundError(f"model path is not a file: {path}")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot read model file {path}: {exc}") from exc
    if head[:4] != GGUF_MAGIC:
        raise GGUFValidationError(
            "magic", 0, f"expected {GGUF_MAGIC!r}, found {head[:4]!r}: {path.name} is not a GGUF file. Convert the "
            "model with `finllm-edge convert` or llama.cpp's convert_hf_to_gguf.py", path=str(path))
    # Every header field (counts, lengths, offsets) is checked before llama.cpp parses the file:
    # a model is untrusted input and llama.cpp's loader trusts its headers.
    validate_file(path)


class _Owner:
    """Shared close()/context-manager plumbing for one native pointer."""

    _ptr = None

    def _free(self, ptr) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def _require(self):
        if self._ptr is None:
            raise FinLLMEdgeError(f"{type(self).__name__} is closed")
        return self._ptr

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            self._free(ptr)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class Model(_Owner):
    """An mmapped llama_model plus its vocab."""

    def __init__(self, path: str | os.PathLike, *, use_mmap: bool = True, repack: bool = True) -> None:
        self.path = Path(path)
        check_gguf_file(self.path)
        ensure_backend()
        params = lc.llama_model_default_params()
        params.n_gpu_layers = 0
        params.load_mode = lc.LLAMA_LOAD_MODE_MMAP if use_mmap else lc.LLAMA_LOAD_MODE_NONE
        params.use_extra_bufts = repack
        LOG.lines.clear()
        ptr = lc.llama_model_load_from_file(os.fsencode(self.path), params)
        if not ptr:
            raise CorruptModelError(_with_log(
                f"llama.cpp could not load {self.path}: the GGUF is truncated, corrupt or of an "
                "unsupported architecture. Re-download or re-convert it"))
        self._ptr = ptr
        self.vocab = lc.llama_model_get_vocab(ptr)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        self.eos = lc.llama_vocab_eos(self.vocab)
        self.bos = lc.llama_vocab_bos(self.vocab)
        self.add_bos = bool(lc.llama_vocab_get_add_bos(self.vocab))
        self._piece_buf = ctypes.create_string_buffer(256)

    def _free(self, ptr) -> None:
        lc.llama_model_free(ptr)

    # metadata -----------------------------------------------------------------
    def desc(self) -> str:
        buf = ctypes.create_string_buffer(256)
        lc.llama_model_desc(self._require(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def size_bytes(self) -> int:
        return int(lc.llama_model_size(self._require()))

    def n_params(self) -> int:
        return int(lc.llama_model_n_params(self._require()))

    def n_ctx_train(self) -> int:
        return int(lc.llama_model_n_ctx_train(self._require()))

    def meta(self, key: str) -> str | None:
        ptr = self._require()
        size = 1024
        while True:
            buf = ctypes.create_string_buffer(size)
            n = lc.llama_model_meta_val_str(ptr, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    def chat_template(self) -> str | None:
        raw = lc.llama_model_chat_template(self._require(), None)
        return raw.decode("utf-8", errors="replace") if raw else None

    # tokens -------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        self._require()
        data = text.encode("utf-8")
        cap = len(data) + 8
        while True:
            arr = (lc.llama_token * cap)()
            n = lc.llama_tokenize(self.vocab, data, len(data), arr, cap, add_special, parse_special)
            if n >= 0:
                return list(arr[:n])
            if n == -(2**31):
                raise ContextOverflowError("prompt is too long to tokenize (over 2^31 tokens)")
            cap = -n

    def token_to_piece(self, token: int, *, special: bool = False) -> bytes:
        buf = self._piece_buf
        n = lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def detokenize(self, tokens: list[int], *, special: bool = False) -> bytes:
        self._require()
        arr = (lc.llama_token * max(1, len(tokens)))(*tokens)
        cap = 16 * len(tokens) + 16
        while True:
            buf = ctypes.create_string_buffer(cap)
            n = lc.llama_detokenize(self.vocab, arr, len(tokens), buf, cap, False, special)
            if n >= 0:
                return buf.raw[:n]
            cap = -n + 1

    def is_eog(self, token: int) -> bool:
        return bool(lc.llama_vocab_is_eog(self.vocab, token))


class _GGMLThreadpoolParams(ctypes.Structure):
    # ggml.h: struct ggml_threadpool_params (GGML_MAX_N_THREADS = 512)
    _fields_ = [("cpumask", ctypes.c_bool * 512), ("n_threads", ctypes.c_int), ("prio", ctypes.c_int),
                ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool), ("paused", ctypes.c_bool)]


def _bind_threadpool_api():
    """ggml_threadpool_* and llama_attach_threadpool, which llama-cpp-python does not bind (or None)."""
    libdir = Path(lc.__file__).resolve().parent / "lib"
    try:
        base = ctypes.CDLL(str(libdir / "libggml-base.so"))
        cpu = ctypes.CDLL(str(libdir / "libggml-cpu.so"))
        init, new, free = base.ggml_threadpool_params_init, cpu.ggml_threadpool_new, cpu.ggml_threadpool_free
        attach = _bindings._lib.llama_attach_threadpool
    except (OSError, AttributeError):
        return None
    init.argtypes, init.restype = [ctypes.POINTER(_GGMLThreadpoolParams), ctypes.c_int], None
    new.argtypes, new.restype = [ctypes.POINTER(_GGMLThreadpoolParams)], ctypes.c_void_p
    free.argtypes, free.restype = [ctypes.c_void_p], None
    attach.argtypes, attach.restype = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p], None
    return init, new, free, attach


_TP_API = _bind_threadpool_api()


class ThreadPool(_Owner):
    """A persistent ggml CPU threadpool (as llama-bench attaches); without one, ggml builds a
    disposable pool for every llama_decode call."""

    def __init__(self, n_threads: int, poll: int = 50) -> None:
        if _TP_API is None:
            raise FinLLMEdgeError("this llama-cpp-python build does not export the ggml threadpool API")
        init, new, _, _ = _TP_API
        params = _GGMLThreadpoolParams()
        init(ctypes.byref(params), n_threads)
        params.poll = poll
        ptr = new(ctypes.byref(params))
        if not ptr:
            raise FinLLMEdgeError(f"ggml_threadpool_new failed for {n_threads} threads")
        self._ptr = ptr

    def _free(self, ptr) -> None:
        _TP_API[2](ptr)


@dataclass(frozen=True)
class ContextParams:
    n_ctx: int = 2048
    n_batch: int = 512
    n_ubatch: int = 512
    n_threads: int = 1
    n_threads_batch: int = 1
    flash_attn: bool | None = None  # None = llama.cpp's auto
    threadpool: bool = True  # attach a persistent threadpool when the library exports the API


class Context(_Owner):
    """A llama_context (KV cache, threads) over a Model; keeps the model alive."""

    def __init__(self, model: Model, params: ContextParams) -> None:
        if params.n_ctx <= 0:
            raise ValueError(f"n_ctx must be positive, got {params.n_ctx}")
        self.model = model
        self.params = params
        cp = lc.llama_context_default_params()
        cp.n_ctx = params.n_ctx
        cp.n_batch = params.n_batch
        cp.n_ubatch = min(params.n_ubatch, params.n_batch)
        cp.n_seq_max = 1
        cp.n_threads = params.n_threads
        cp.n_threads_batch = params.n_threads_batch
        cp.no_perf = True
        if params.flash_attn is not None:
            cp.flash_attn_type = (lc.LLAMA_FLASH_ATTN_TYPE_ENABLED if params.flash_attn
                                  else lc.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        ptr = lc.llama_init_from_model(model._require(), cp)
        if not ptr:
            raise FinLLMEdgeError(_with_log(
                f"llama.cpp could not create a context (n_ctx={params.n_ctx}); try a smaller n_ctx"))
        self._ptr = ptr
        self.n_ctx = int(lc.llama_n_ctx(ptr))
        self.n_batch = int(lc.llama_n_batch(ptr))
        self.threadpool: ThreadPool | None = None
        if params.threadpool and _TP_API is not None:
            self.threadpool = ThreadPool(params.n_threads)
            _TP_API[3](ptr, self.threadpool._ptr, None)

    def _free(self, ptr) -> None:
        lc.llama_free(ptr)
        if self.threadpool is not None:  # after the context that used it
            self.threadpool.close()

    def clear(self) -> None:
        lc.llama_memory_clear(lc.llama_get_memory(self._require()), True)

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        lc.llama_set_n_threads(self._require(), n_threads, n_threads_batch)

    def decode(self, batch: "Batch") -> None:
        rc = lc.llama_decode(self._require(), batch.struct)
        if rc == 1:
            raise ContextOverflowError(_with_log(
                f"no room left in the context (n_ctx={self.n_ctx}); raise n_ctx or shorten the prompt"))
        if rc != 0:
            raise FinLLMEdgeError(_with_log(f"llama_decode failed with status {rc}"))


class Batch(_Owner):
    """A llama_batch of up to `capacity` tokens of sequence 0."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.struct = lc.llama_batch_init(capacity, 0, 1)
        self._ptr = ctypes.addressof(self.struct)
        for i in range(capacity):
            self.struct.n_seq_id[i] = 1
            self.struct.seq_id[i][0] = 0

    def _free(self, _ptr) -> None:
        lc.llama_batch_free(self.struct)

    def set(self, tokens: list[int], pos0: int, logits_last: bool = True) -> None:
        n = len(tokens)
        if n > self.capacity:
            raise ValueError(f"batch of {n} tokens exceeds capacity {self.capacity}")
        s = self.struct
        s.n_tokens = n
        for i, tok in enumerate(tokens):
            s.token[i] = tok
            s.pos[i] = pos0 + i
            s.logits[i] = 0
        if n and logits_last:
            s.logits[n - 1] = 1

    def set_one(self, token: int, pos: int) -> None:
        s = self.struct
        s.n_tokens = 1
        s.token[0] = token
        s.pos[0] = pos
        s.logits[0] = 1


@dataclass(frozen=True)
class SamplerParams:
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int = lc.LLAMA_DEFAULT_SEED


class Sampler(_Owner):
    """A llama_sampler chain: penalties -> (greedy | top-k -> top-p -> min-p -> temp -> dist)."""

    def __init__(self, model: Model, p: SamplerParams) -> None:
        # Plain greedy needs no candidate array: an argmax over the logits row is ~7x cheaper
        # than llama_sampler_sample (which fills n_vocab token_data entries every token).
        self._argmax_vocab = model.n_vocab if (p.temperature <= 0.0 and p.repeat_penalty == 1.0) else 0
        cparams = lc.llama_sampler_chain_default_params()
        cparams.no_perf = True
        chain = lc.llama_sampler_chain_init(cparams)
        if not chain:
            raise FinLLMEdgeError("llama_sampler_chain_init failed")
        self._ptr = chain
        if p.repeat_penalty != 1.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_penalties(
                model.n_vocab, p.repeat_last_n, p.repeat_penalty, 0.0, 0.0))
        if p.temperature <= 0.0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        else:
            if p.top_k > 0:
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(p.top_k))
            if p.top_p < 1.0:
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(p.top_p, 1))
            if p.min_p > 0.0:
                lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(p.min_p, 1))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(p.temperature))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(p.seed & 0xFFFFFFFF))

    def _free(self, ptr) -> None:
        lc.llama_sampler_free(ptr)

    _row_addr = 0
    _row: np.ndarray | None = None

    def sample(self, ctx: Context, idx: int = -1) -> int:
        """Sample from the logits of output `idx` and accept the token into the chain."""
        if self._argmax_vocab:
            # Between two decodes the weights have flushed the caches, so every Python object
            # touched here costs misses: keep one numpy view of the row and rebuild it only
            # when llama.cpp hands out another address (measured: ~130 -> ~50 us a token).
            addr = _logits_row_addr(ctx._ptr, idx)
            if not addr:
                raise FinLLMEdgeError(f"no logits for output {idx}")
            if addr != self._row_addr:
                self._row = np.frombuffer((ctypes.c_float * self._argmax_vocab).from_address(addr), np.float32)
                self._row_addr = addr
            return int(self._row.argmax())
        return int(lc.llama_sampler_sample(self._ptr, ctx._ptr, idx))


# llama_get_logits_ith returning the address as an int (the binding's POINTER(c_float) result
# costs an object per call).
_logits_row_addr = type(lc.llama_get_logits_ith)(("llama_get_logits_ith", _bindings._lib))
_logits_row_addr.argtypes = [ctypes.c_void_p, ctypes.c_int32]
_logits_row_addr.restype = ctypes.c_void_p
