"""ctypes binding of libfinllm_edge (native/include/finllm_edge.h): the one runtime core.

Layer 1 of the Python runtime: the C structs and function signatures, the library loaded
once per process (the best CPU variant built for this machine: finllm_edge.cpu_variant),
and `check()`, which turns an fe_status into the typed exception of finllm_edge.errors.
No rule that decides tokens, timing or validation lives here: only the translation.
"""

from __future__ import annotations

import ctypes as C
import os
import threading
from functools import lru_cache
from typing import Any

from . import errors
from .cpu_variant import NativeLibraryError, choose_library

# ---------------------------------------------------------------- status codes

FE_OK = 0
STATUS_ERRORS: dict[int, type[errors.FinLLMEdgeError]] = {
    -1: errors.InvalidArgumentError,
    -2: errors.ModelNotFoundError,
    -3: errors.CorruptModelError,
    -4: errors.NativeMemoryError,
    -5: errors.ContextOverflowError,
    -6: errors.CancelledError,
    -7: errors.DecodeError,
    -8: errors.TemplateError,
    -9: errors.NativeError,  # FE_ERR_BUFFER_TOO_SMALL: handled by the callers that can retry
    -10: errors.NativeError,
    -11: errors.EngineBusyError,
}
FE_ERR_BUFFER_TOO_SMALL = -9
FE_ERR_BUSY = -11
FE_SEED_RANDOM = 0xFFFFFFFF

# fe_stop_reason
STOP_NONE, STOP_EOS, STOP_MAX_TOKENS, STOP_STRING, STOP_CALLBACK, STOP_CANCELLED, STOP_CONTEXT_FULL = range(7)

# ---------------------------------------------------------------- structs (same order as the header)


class ModelParams(C.Structure):
    _fields_ = [("use_mmap", C.c_bool), ("use_mlock", C.c_bool), ("check_tensors", C.c_bool)]


class ModelInfo(C.Structure):
    _fields_ = [
        ("desc", C.c_char * 128),
        ("size_bytes", C.c_uint64),
        ("file_size_bytes", C.c_uint64),
        ("n_params", C.c_uint64),
        ("bits_per_weight", C.c_double),
        ("n_ctx_train", C.c_int32),
        ("n_vocab", C.c_int32),
        ("has_chat_template", C.c_bool),
        ("load_ms", C.c_double),
    ]


class SamplingParams(C.Structure):
    _fields_ = [
        ("temperature", C.c_float),
        ("top_k", C.c_int32),
        ("top_p", C.c_float),
        ("min_p", C.c_float),
        ("repeat_penalty", C.c_float),
        ("repeat_last_n", C.c_int32),
        ("seed", C.c_uint32),
        ("grammar", C.c_char_p),
        ("json_schema", C.c_char_p),
    ]


class SessionParams(C.Structure):
    _fields_ = [("n_ctx", C.c_uint32), ("n_batch", C.c_uint32), ("n_threads", C.c_int32),
                ("n_threads_batch", C.c_int32), ("prefix_reuse", C.c_bool),
                ("flash_attn", C.c_bool), ("reuse_generated", C.c_bool)]


TOKEN_CALLBACK = C.CFUNCTYPE(C.c_bool, C.c_void_p, C.c_size_t, C.c_int32, C.c_void_p)


class GenerateParams(C.Structure):
    _fields_ = [
        ("max_tokens", C.c_int32),
        ("stop", C.POINTER(C.c_char_p)),
        ("n_stop", C.c_size_t),
        ("add_special", C.c_bool),
        ("parse_special", C.c_bool),
        ("ignore_eos", C.c_bool),
        ("sampling", SamplingParams),
        ("on_token", C.c_void_p),
        ("user_data", C.c_void_p),
    ]


class TokenEvent(C.Structure):
    _fields_ = [("text", C.c_void_p), ("text_len", C.c_size_t), ("token", C.c_int32), ("done", C.c_bool),
                ("stop_reason", C.c_int)]


class ChatMessage(C.Structure):
    _fields_ = [("role", C.c_char_p), ("content", C.c_char_p)]


class Profile(C.Structure):
    _fields_ = [
        ("load_ms", C.c_double), ("tokenize_ms", C.c_double), ("prefill_ms", C.c_double), ("ttft_ms", C.c_double),
        ("prefill_tok_s", C.c_double), ("decode_tok_s", C.c_double), ("token_ms_p50", C.c_double),
        ("token_ms_p90", C.c_double), ("token_ms_p99", C.c_double), ("e2e_ms", C.c_double),
        ("peak_rss_mb", C.c_double), ("n_prompt", C.c_int32), ("n_gen", C.c_int32),
        ("token_ms", C.POINTER(C.c_double)), ("n_token_ms", C.c_size_t), ("n_prompt_reused", C.c_int32),
    ]


class RunTiming(C.Structure):
    _fields_ = [("ttft_ms", C.c_double), ("prefill_ms", C.c_double), ("e2e_ms", C.c_double),
                ("n_prompt", C.c_int32), ("n_gen", C.c_int32), ("token_ms", C.POINTER(C.c_double)),
                ("n_token_ms", C.c_size_t), ("n_prompt_reused", C.c_int32)]


class ProfileMeta(C.Structure):
    _fields_ = [
        ("tool", C.c_char_p), ("model", C.c_void_p), ("model_path", C.c_char_p), ("model_sha256", C.c_char_p),
        ("model_type", C.c_char_p), ("model_size_bytes", C.c_uint64), ("bits_per_weight", C.c_double),
        ("runtime_version", C.c_char_p), ("variant", C.c_char_p), ("emulated", C.c_bool),
        ("n_threads", C.c_int32), ("n_ctx", C.c_int32), ("warmup", C.c_int32), ("load_ms", C.c_double),
        ("cores_used", C.POINTER(C.c_int32)), ("n_cores_used", C.c_size_t), ("thermal_before_json", C.c_char_p),
    ]


class AdapterInfo(C.Structure):
    _fields_ = [("name", C.c_char * 128), ("sha256", C.c_char * 65), ("n_tensors", C.c_int32),
                ("rank_max", C.c_int32), ("alpha", C.c_float), ("size_bytes", C.c_uint64), ("load_ms", C.c_double)]


class SchedulerParams(C.Structure):
    _fields_ = [("n_slots", C.c_int32), ("n_ctx", C.c_uint32), ("n_batch", C.c_uint32), ("n_batch_busy", C.c_uint32),
                ("n_threads", C.c_int32), ("n_threads_batch", C.c_int32), ("max_queued", C.c_int32),
                ("p99_token_ms", C.c_double), ("flash_attn", C.c_bool),
                ("prefix_reuse", C.c_bool), ("reuse_generated", C.c_bool), ("settle_answers", C.c_bool)]


class BenchParams(C.Structure):
    _fields_ = [("n_prompt", C.c_int32), ("n_gen", C.c_int32), ("repetitions", C.c_int32), ("warmup", C.c_int32),
                ("prompt_text", C.c_char_p), ("random_tokens", C.c_bool)]


class BenchResult(C.Structure):
    _fields_ = [("runs", C.POINTER(RunTiming)), ("n_runs", C.c_size_t), ("thermal_before_json", C.c_void_p)]


class DriftParams(C.Structure):
    _fields_ = [("n_buckets", C.c_int32), ("n_named", C.c_int32), ("window_tokens", C.c_int32),
                ("smoothing", C.c_double)]


class DriftRefInfo(C.Structure):
    _fields_ = [("tokenizer_sha256", C.c_char * 65), ("n_vocab", C.c_int32), ("params", DriftParams),
                ("watch_threshold", C.c_double), ("drift_threshold", C.c_double), ("watch_rate", C.c_double),
                ("drift_rate", C.c_double), ("n_ref_tokens", C.c_uint64), ("n_calibration_windows", C.c_uint64),
                ("calibration_seed", C.c_uint64)]


class DriftStatus(C.Structure):
    _fields_ = [("state", C.c_int), ("kl", C.c_double), ("watch_threshold", C.c_double),
                ("drift_threshold", C.c_double), ("window_tokens", C.c_int32), ("n_window", C.c_int32),
                ("n_requests", C.c_int64), ("n_tokens", C.c_int64), ("n_evaluations", C.c_int64),
                ("n_watch", C.c_int64), ("n_drift", C.c_int64), ("first_drift_request", C.c_int64),
                ("first_drift_tokens", C.c_int64)]


# ---------------------------------------------------------------- functions

_P = C.c_void_p
_SIGNATURES: dict[str, tuple] = {
    "fe_status_str": (C.c_char_p, [C.c_int]),
    "fe_last_error": (C.c_char_p, []),
    "fe_version": (C.c_char_p, []),
    "fe_llama_version": (C.c_char_p, []),
    "fe_build_variant": (C.c_char_p, []),
    "fe_set_log_level": (None, [C.c_int]),
    "fe_model_default_params": (ModelParams, []),
    "fe_model_load": (C.c_int, [C.c_char_p, C.POINTER(ModelParams), C.POINTER(_P)]),
    "fe_model_free": (None, [_P]),
    "fe_model_get_info": (C.c_int, [_P, C.POINTER(ModelInfo)]),
    "fe_model_meta": (C.c_int, [_P, C.c_char_p, C.c_char_p, C.c_size_t, C.POINTER(C.c_size_t)]),
    "fe_model_set_chat_template": (C.c_int, [_P, C.c_char_p]),
    "fe_model_set_sha256": (C.c_int, [_P, C.c_char_p]),
    "fe_file_sha256": (C.c_int, [C.c_char_p, C.c_char_p]),
    "fe_set_hash_index_dir": (C.c_int, [C.c_char_p]),
    "fe_gguf_preflight": (C.c_int, [C.c_char_p]),
    "fe_tokenize": (C.c_int, [_P, C.c_char_p, C.c_bool, C.c_bool, C.POINTER(C.c_int32), C.c_int32,
                              C.POINTER(C.c_int32)]),
    "fe_detokenize": (C.c_int, [_P, C.POINTER(C.c_int32), C.c_int32, C.c_bool, C.c_char_p, C.c_size_t,
                                C.POINTER(C.c_size_t)]),
    "fe_token_piece": (C.c_int, [_P, C.c_int32, C.c_bool, C.c_char_p, C.c_size_t, C.POINTER(C.c_size_t)]),
    "fe_token_eos": (C.c_int32, [_P]),
    "fe_token_bos": (C.c_int32, [_P]),
    "fe_token_is_eog": (C.c_bool, [_P, C.c_int32]),
    "fe_chat_format": (C.c_int, [_P, C.POINTER(ChatMessage), C.c_size_t, C.c_bool, C.c_char_p, C.c_size_t,
                                 C.POINTER(C.c_size_t)]),
    "fe_chat_render": (C.c_int, [C.c_char_p, C.c_char_p, C.c_char_p, C.POINTER(ChatMessage), C.c_size_t, C.c_bool,
                                 C.c_char_p, C.c_size_t, C.POINTER(C.c_size_t)]),
    "fe_sampling_default_params": (SamplingParams, []),
    "fe_sampling_check": (C.c_int, [C.POINTER(SamplingParams)]),
    "fe_json_schema_to_grammar": (C.c_int, [C.c_char_p, C.c_char_p, C.c_size_t, C.POINTER(C.c_size_t)]),
    "fe_grammar_check": (C.c_int, [_P, C.c_char_p, C.c_char_p]),
    "fe_session_default_params": (SessionParams, []),
    "fe_session_params_check": (C.c_int, [C.POINTER(SessionParams)]),
    "fe_cpu_count": (C.c_int32, []),
    "fe_default_n_threads": (C.c_int32, []),
    "fe_session_create": (C.c_int, [_P, C.POINTER(SessionParams), C.POINTER(_P)]),
    "fe_session_free": (None, [_P]),
    "fe_session_reset": (C.c_int, [_P]),
    "fe_session_settle": (C.c_int, [_P, C.POINTER(C.c_int32)]),
    "fe_settle_idle_ms": (C.c_int32, []),
    "fe_session_cancel": (None, [_P]),
    "fe_session_cached_tokens": (C.c_int, [_P, C.POINTER(C.c_int32), C.c_int32, C.POINTER(C.c_int32)]),
    "fe_session_save_prefix": (C.c_int, [_P, C.POINTER(C.c_int32), C.c_int32, C.c_char_p]),
    "fe_session_save_prompt": (C.c_int, [_P, C.c_char_p, C.c_char_p]),
    "fe_session_save_chat": (C.c_int, [_P, C.POINTER(ChatMessage), C.c_size_t, C.c_char_p]),
    "fe_session_load_state": (C.c_int, [_P, C.c_char_p]),
    "fe_adapter_load": (C.c_int, [_P, C.c_char_p, C.POINTER(_P)]),
    "fe_adapter_free": (None, [_P]),
    "fe_adapter_get_info": (C.c_int, [_P, C.POINTER(AdapterInfo)]),
    "fe_session_set_adapters": (C.c_int, [_P, C.POINTER(_P), C.POINTER(C.c_float), C.c_size_t]),
    "fe_session_get_adapters": (C.c_int, [_P, C.POINTER(_P), C.POINTER(C.c_float), C.c_size_t,
                                          C.POINTER(C.c_size_t)]),
    "fe_generate_default_params": (GenerateParams, []),
    "fe_finish_reason": (C.c_char_p, [C.c_int]),
    "fe_request_start": (C.c_int, [_P, C.c_char_p, C.POINTER(GenerateParams)]),
    "fe_request_start_tokens": (C.c_int, [_P, C.POINTER(C.c_int32), C.c_int32, C.POINTER(GenerateParams)]),
    "fe_request_start_chat": (C.c_int, [_P, C.POINTER(ChatMessage), C.c_size_t, C.POINTER(GenerateParams)]),
    "fe_request_next": (C.c_int, [_P, C.POINTER(TokenEvent)]),
    "fe_request_end": (None, [_P]),
    "fe_request_active": (C.c_bool, [_P]),
    "fe_request_prompt_tokens": (C.c_int, [_P, C.POINTER(C.c_int32), C.c_int32, C.POINTER(C.c_int32)]),
    "fe_session_get_profile": (C.c_int, [_P, C.POINTER(Profile)]),
    "fe_text_stream_new": (_P, [C.POINTER(C.c_char_p), C.c_size_t]),
    "fe_text_stream_push": (C.c_int, [_P, C.c_char_p, C.c_size_t, C.POINTER(C.c_void_p), C.POINTER(C.c_size_t),
                                      C.POINTER(C.c_bool)]),
    "fe_text_stream_finish": (C.c_int, [_P, C.POINTER(C.c_void_p), C.POINTER(C.c_size_t)]),
    "fe_text_stream_free": (None, [_P]),
    "fe_free": (None, [_P]),
    "fe_thermal_json": (_P, []),
    "fe_device_json": (_P, []),
    "fe_profile_default_meta": (ProfileMeta, []),
    "fe_profile_json": (_P, [C.POINTER(RunTiming), C.c_size_t, C.POINTER(ProfileMeta)]),
    "fe_scheduler_default_params": (SchedulerParams, []),
    "fe_scheduler_params_check": (C.c_int, [C.POINTER(SchedulerParams)]),
    "fe_scheduler_create": (C.c_int, [_P, C.POINTER(SchedulerParams), C.POINTER(_P)]),
    "fe_scheduler_free": (None, [_P]),
    "fe_sched_submit": (C.c_int, [_P, C.c_char_p, C.POINTER(GenerateParams), C.POINTER(_P)]),
    "fe_sched_submit_tokens": (C.c_int, [_P, C.POINTER(C.c_int32), C.c_int32, C.POINTER(GenerateParams),
                                         C.POINTER(_P)]),
    "fe_sched_submit_chat": (C.c_int, [_P, C.POINTER(ChatMessage), C.c_size_t, C.POINTER(GenerateParams),
                                       C.POINTER(_P)]),
    "fe_chat_tokenize": (C.c_int, [_P, C.POINTER(ChatMessage), C.c_size_t, C.POINTER(C.c_int32), C.c_int32,
                                   C.POINTER(C.c_int32)]),
    "fe_sched_next": (C.c_int, [_P, C.POINTER(TokenEvent)]),
    "fe_sched_next_timeout": (C.c_int, [_P, C.POINTER(TokenEvent), C.c_int32]),
    "fe_sched_cancel": (None, [_P]),
    "fe_scheduler_set_wakeup_fd": (C.c_int, [_P, C.c_int]),
    "fe_sched_request_get_profile": (C.c_int, [_P, C.POINTER(Profile)]),
    "fe_sched_request_free": (None, [_P]),
    "fe_scheduler_stats_json": (_P, [_P]),
    "fe_bench_default_params": (BenchParams, []),
    "fe_bench_text": (C.c_char_p, []),
    "fe_benchmark": (C.c_int, [_P, C.POINTER(BenchParams), C.POINTER(BenchResult)]),
    "fe_bench_result_free": (None, [C.POINTER(BenchResult)]),
    # drift monitoring (finllm_edge/drift.py)
    "fe_drift_state_str": (C.c_char_p, [C.c_int]),
    "fe_drift_default_params": (DriftParams, []),
    "fe_model_tokenizer_sha256": (C.c_int, [_P, C.c_char_p]),
    "fe_drift_ref_build": (C.c_int, [C.c_char_p, C.c_int32, C.POINTER(C.c_int32), C.c_size_t,
                                     C.POINTER(DriftParams), C.POINTER(_P)]),
    "fe_drift_ref_window_kls": (C.c_int, [_P, C.POINTER(C.c_int32), C.POINTER(C.c_int32), C.c_size_t, C.c_uint64,
                                          C.POINTER(C.c_double), C.c_size_t]),
    "fe_drift_ref_calibrate": (C.c_int, [_P, C.POINTER(C.c_double), C.c_size_t, C.c_double, C.c_double,
                                         C.c_uint64]),
    "fe_drift_ref_get_info": (C.c_int, [_P, C.POINTER(DriftRefInfo)]),
    "fe_drift_ref_bucket": (C.c_int32, [_P, C.c_int32]),
    "fe_drift_ref_save": (C.c_int, [_P, C.c_char_p]),
    "fe_drift_ref_load": (C.c_int, [C.c_char_p, C.POINTER(_P)]),
    "fe_drift_ref_free": (None, [_P]),
    "fe_drift_monitor_new": (C.c_int, [_P, C.POINTER(_P)]),
    "fe_drift_monitor_free": (None, [_P]),
    "fe_drift_monitor_reset": (None, [_P]),
    "fe_drift_observe": (C.c_int, [_P, C.POINTER(C.c_int32), C.c_size_t]),
    "fe_drift_monitor_set_sampling": (C.c_int, [_P, C.c_int32, C.c_int32]),
    "fe_drift_get_status": (C.c_int, [_P, C.POINTER(DriftStatus)]),
    "fe_drift_monitor_json": (_P, [_P]),
    "fe_session_enable_drift": (C.c_int, [_P, C.c_char_p]),
    "fe_session_drift_monitor": (_P, [_P]),
    "fe_scheduler_enable_drift": (C.c_int, [_P, C.c_char_p]),
    "fe_scheduler_drift_monitor": (_P, [_P]),
}

_INT_FIELDS = {C.c_int32: (-(1 << 31), (1 << 31) - 1), C.c_uint32: (0, (1 << 32) - 1)}


def set_field(params: C.Structure, name: str, value: Any) -> None:
    """params.<name> = value, after the check its C type needs: True/False for a bool, a number for a
    double, an integer that fits an int field (ctypes would wrap one that does not). The ranges are the
    core's rule: bindings check them with fe_session_params_check / fe_scheduler_params_check."""
    ctype = dict(params._fields_)[name]
    if ctype is C.c_bool:
        if not isinstance(value, bool):
            raise errors.InvalidArgumentError(f"{name} = {value!r}: use True or False")
    elif ctype is C.c_double:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise errors.InvalidArgumentError(f"{name} = {value!r} must be a number")
        value = float(value)
    else:
        lo, hi = _INT_FIELDS[ctype]
        if isinstance(value, bool) or not isinstance(value, int):
            raise errors.InvalidArgumentError(f"{name} = {value!r} must be an integer")
        if not lo <= value <= hi:
            raise errors.InvalidArgumentError(f"{name} = {value} is out of range")
    setattr(params, name, value)


_load_lock = threading.Lock()


class Lib:
    """The loaded library: `lib.fe_xxx(...)` calls, plus where it came from."""

    def __init__(self) -> None:
        choice = choose_library()
        self.path = choice.path
        self.variant = choice.variant
        self.reason = choice.reason
        try:
            self.cdll = C.CDLL(str(choice.path))
        except OSError as exc:
            raise NativeLibraryError(f"cannot load {choice.path}: {exc}") from exc
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(self.cdll, name, None)
            if fn is None:
                continue  # an older library: calls to it fail with AttributeError naming it
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)

    def has(self, name: str) -> bool:
        """Whether this library has function `name` (an older build may lack the newest ones)."""
        return name in self.__dict__

    def __getattr__(self, name: str):
        raise NativeLibraryError(f"{self.path} has no function {name}: rebuild it (finllm-edge native build)")

    def error(self, status: int, what: str = "") -> errors.FinLLMEdgeError:
        msg = (self.fe_last_error() or b"").decode("utf-8", "replace")
        if not msg:
            msg = self.fe_status_str(status).decode()
        cls = STATUS_ERRORS.get(status, errors.NativeError)
        return cls(f"{what}: {msg}" if what else msg)

    def check(self, status: int, what: str = "") -> None:
        if status != FE_OK:
            raise self.error(status, what)

    def take_string(self, ptr: int | None, what: str) -> str:
        """A malloc'd C string returned by the library -> str (freed here)."""
        if not ptr:
            raise self.error(-10, what)
        try:
            return C.string_at(ptr).decode("utf-8", "replace")
        finally:
            self.fe_free(ptr)


@lru_cache(maxsize=1)
def _lib() -> Lib:
    with _load_lock:
        lib_ = Lib()
        try:
            set_hash_index_dir(lib_)
        except errors.FinLLMEdgeError:
            pass  # a cache path the core refuses (too long): a hash per process, as without an index
        return lib_


def set_hash_index_dir(lib_: Lib, folder: str | os.PathLike | None = "") -> None:
    """Where the core remembers file hashes across processes (fe_set_hash_index_dir): by default
    the cache folder, so a model is hashed once, not in every process; None turns it off."""
    if not hasattr(lib_.cdll, "fe_set_hash_index_dir"):
        return  # an older library: a hash per process, as before
    if folder == "":
        try:
            from .paths import cache_dir

            folder = cache_dir()
        except OSError:
            folder = None  # no writable home: no index
    lib_.check(lib_.fe_set_hash_index_dir(None if folder is None else os.fsencode(os.fspath(folder))),
               "hash index folder")


def file_sha256(path: str | os.PathLike) -> str:
    """The core's fe_file_sha256 (cached in the process and in the hash index)."""
    L = lib()
    out = C.create_string_buffer(65)
    L.check(L.fe_file_sha256(os.fsencode(os.fspath(path)), out), "sha256")
    return out.value.decode("ascii")


def lib() -> Lib:
    """The process-wide library (loaded on first use)."""
    return _lib()


def read_sized(call, what: str, initial: int = 4096) -> bytes:
    """Calls `call(buf, size, n_out)` with a growing buffer (FE_ERR_BUFFER_TOO_SMALL -> retry)."""
    L = lib()
    size = initial
    for _ in range(3):
        buf = C.create_string_buffer(size)
        n = C.c_size_t(0)
        st = call(buf, size, C.byref(n))
        if st == FE_OK:
            return buf.raw[: n.value]
        if st != FE_ERR_BUFFER_TOO_SMALL:
            raise L.error(st, what)
        size = n.value + 1
    raise errors.NativeError(f"{what}: the output kept growing")


def tokenize(model, text: str, add_special: bool, parse_special: bool) -> list[int]:
    """fe_tokenize of `text` with the loaded `model` (Engine.tokenize, Scheduler.tokenize)."""
    L = lib()
    data = text.encode("utf-8")
    cap = len(data) + 8
    for _ in range(2):
        buf = (C.c_int32 * cap)()
        n = C.c_int32(0)
        st = L.fe_tokenize(model, data, add_special, parse_special, buf, cap, C.byref(n))
        if st == FE_OK:
            return list(buf[: n.value])
        if st != FE_ERR_BUFFER_TOO_SMALL:
            raise L.error(st, "tokenize")
        cap = n.value
    raise errors.NativeError("tokenize: the token count kept growing")


def count_chat_tokens(model, messages) -> int:
    """The prompt tokens a chat request evaluates for `messages` (fe_chat_tokenize: the model's
    template and generation prompt), for Engine and Scheduler count_chat_tokens."""
    L = lib()
    arr, n, _keep = chat_array(list(messages))
    count = C.c_int32(0)
    st = L.fe_chat_tokenize(model, arr, n, None, 0, C.byref(count))
    if st not in (FE_OK, FE_ERR_BUFFER_TOO_SMALL):
        raise L.error(st, "count_chat_tokens")
    return int(count.value)


def token_array(tokens) -> tuple[C.Array, int]:
    """Token ids as a C int32 array (the core checks them against the vocabulary); ids that are not
    integers or do not fit 32 bits are an InvalidArgumentError here (ctypes would wrap them)."""
    ids = []
    for t in tokens:
        if isinstance(t, bool) or not isinstance(t, int):
            raise errors.InvalidArgumentError(f"token ids must be integers, got {t!r}")
        if not -(2**31) <= t < 2**31:
            raise errors.InvalidArgumentError(f"token id {t} is outside the vocabulary")
        ids.append(t)
    arr = (C.c_int32 * len(ids))(*ids)
    return arr, len(ids)


def stop_array(stops: tuple[str, ...]):
    """(array of char*, count, keep-alive list) for fe_generate_params.stop."""
    encoded = [s.encode("utf-8") for s in stops]
    arr = (C.c_char_p * max(1, len(encoded)))(*encoded) if encoded else None
    return arr, len(encoded), encoded


def chat_array(messages) -> tuple[C.Array, int, list]:
    keep: list[bytes] = []
    items = []
    for i, m in enumerate(messages):
        try:
            role, content = m["role"], m["content"]
        except (KeyError, TypeError):
            raise errors.InvalidArgumentError(
                f"message {i} must be a mapping with 'role' and 'content', got {m!r:.80}") from None
        if not isinstance(role, str) or not isinstance(content, str):
            raise errors.InvalidArgumentError(f"message {i}: 'role' and 'content' must be strings")
        r, c = role.encode("utf-8"), content.encode("utf-8")
        keep += [r, c]
        items.append(ChatMessage(r, c))
    arr = (ChatMessage * max(1, len(items)))(*items)
    return arr, len(items), keep
