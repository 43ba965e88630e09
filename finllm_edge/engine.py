"""finllm_edge.Engine: a GGUF model on the C core (libfinllm_edge), profiled on every generation.

    from finllm_edge import Engine

    with Engine("model.gguf", n_ctx=2048) as engine:           # n_threads: the big cores
        for piece in engine.chat([{"role": "user", "content": "What is EBITDA?"}], max_tokens=64):
            print(piece, end="", flush=True)
        print(engine.last_profile["decode_tok_s"])

This is a binding, not a runtime: the token loop, sampling and its defaults, stop strings,
cancel, chat templates, validation and the profile are the core's (native/), the same code
fe-bench and the Android app run. Thread safety: one generation at a time per Engine (a
second one while a stream is open is an EngineBusyError); several Engines may run on several
threads. `cancel()` may be called from any thread and stops a prefill within milliseconds.
"""

from __future__ import annotations

import ctypes as C
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from . import _native
from .adapters import AdapterMixin
from .backend import (
    Backend,
    Completion,
    GenerationOptions,
    RunTimes,
    SamplingOptions,
    Step,
    TokenStream,
)
from .errors import EngineBusyError, FinLLMEdgeError, InvalidArgumentError, StateFileError
from .models import default_model_path
from .request_params import NativeRequest
from .structured import as_grammar_error

__all__ = ["Engine", "EngineOptions", "SamplingOptions", "GenerationOptions", "TokenStream", "Completion"]


@dataclass(frozen=True)
class EngineOptions:
    """How a model is loaded and its session sized. None = the core's default."""

    n_threads: int | None = None  # None: one thread per performance core (fe_default_n_threads)
    n_ctx: int = 2048
    n_batch: int = 512
    seed: int | None = None  # default seed of sampled requests (None: a random seed each time)
    use_mmap: bool = True
    chat_template: str | None = None  # Jinja text overriding the GGUF's tokenizer.chat_template
    # Keep the KV cache between requests and evaluate only what follows the longest common token
    # prefix (system prompt, earlier chat turns); the output is the same as without it.
    prefix_reuse: bool = True
    # llama.cpp's flash attention: faster prefill of long prompts (x1.2-1.3 here); prefix reuse stays
    # exact but coarser (the last 64 prompt tokens are always evaluated again). See the README.
    flash_attn: bool = False
    # With prefix_reuse: also reuse tokens a fresh prefill would not reproduce bit for bit (the model's own
    # generated answers, decoded one token at a time), as llama-cpp-python does: a chat that sends back the
    # model's answers evaluates only the new message, but outputs are no longer token-identical to no reuse.
    reuse_generated: bool = False
    # Runtime LoRA adapters (GGUF) loaded and made active at start: [path, ...] (scale 1) or {path: scale};
    # see Engine.load_adapter / set_adapters.
    adapters: Any = None
    # The model file's sha256 as you know it (convert's manifest, your check of the download): saved prompt
    # state is tagged and checked with it instead of a hash of the file. None: the file is hashed once and
    # remembered by its stat stamp across processes (the core's hash index, fe_set_hash_index_dir: the
    # binding keeps it in the cache folder).
    model_sha256: str | None = None


def _int_option(name: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise InvalidArgumentError(f"{name} = {value!r} is out of range: use an integer {rng}")
    return value


class _CoreSteps:
    """The steps of one request on the core (fe_request_next)."""

    def __init__(self, engine: "Engine") -> None:
        self._engine = engine
        self._ev = _native.TokenEvent()
        self._open = True

    def next(self) -> Step:
        L, eng, ev = _native.lib(), self._engine, self._ev
        with eng._step_lock:
            if eng._session is None:  # the Engine was closed under this stream
                self._open = False
                return Step("", -1, True, "cancelled")
            st = L.fe_request_next(eng._session, C.byref(ev))
        if st != _native.FE_OK:
            self._open = False
            raise as_grammar_error(L.error(st, "generation failed"))
        text = C.string_at(ev.text, ev.text_len).decode("utf-8") if ev.text_len else ""
        reason = L.fe_finish_reason(ev.stop_reason).decode() if ev.done else None
        if ev.done:
            self._open = False
        return Step(text, ev.token, ev.done, reason)

    def close(self) -> None:
        if self._open:
            self._open = False
            with self._engine._step_lock:
                if self._engine._session is not None:
                    _native.lib().fe_request_end(self._engine._session)

    def times(self) -> RunTimes:
        return self._engine._times_of_last()


class Engine(AdapterMixin, Backend):
    """A loaded GGUF model and one session of the core. See the module docstring."""

    TOOL = "finllm_edge.Engine"
    supports_response_format = True  # grammar=, json_schema=, response_format= (the core's constrained decoding)

    def __init__(self, model_path: str | os.PathLike | None = None, n_threads: int | None = None,
                 n_ctx: int = 2048, n_batch: int = 512, seed: int | None = None, *,
                 options: EngineOptions | None = None, **kwargs: Any) -> None:
        super().__init__()
        self._model = self._session = None
        self._loaded_adapters = []
        self._closed = True
        self._step_lock = threading.Lock()  # held while the core runs a step; close() waits for none
        if options is None:
            try:
                options = EngineOptions(n_threads=n_threads, n_ctx=n_ctx, n_batch=n_batch, seed=seed, **kwargs)
            except TypeError as exc:
                raise InvalidArgumentError(f"Engine: {exc}") from None
        elif kwargs:
            options = replace(options, **kwargs)
        self.options = options
        L = _native.lib()
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        sp = L.fe_session_default_params()
        for name in ("n_ctx", "n_batch", "prefix_reuse", "flash_attn", "reuse_generated"):
            _native.set_field(sp, name, getattr(options, name))
        if options.n_threads is not None:
            _native.set_field(sp, "n_threads", options.n_threads)
            sp.n_threads_batch = sp.n_threads
        if L.has("fe_session_params_check"):  # the core's ranges, before the model loads (and again at create)
            L.check(L.fe_session_params_check(C.byref(sp)), "Engine")
        if options.seed is not None:
            SamplingOptions(seed=options.seed).to_c()  # checks the range now
        mp = L.fe_model_default_params()
        mp.use_mmap = bool(options.use_mmap)
        model = C.c_void_p()
        t0 = time.perf_counter()
        L.check(L.fe_model_load(os.fsencode(self.model_path), C.byref(mp), C.byref(model)),
                f"cannot load {self.model_path}")
        self._model = model
        self._closed = False
        try:
            if options.chat_template is not None:
                L.check(L.fe_model_set_chat_template(model, options.chat_template.encode("utf-8")),
                        "EngineOptions.chat_template")
            if options.model_sha256 is not None:
                if not isinstance(options.model_sha256, str):
                    raise InvalidArgumentError(f"model_sha256 = {options.model_sha256!r}: give 64 hex digits")
                L.check(L.fe_model_set_sha256(model, options.model_sha256.encode("ascii", "replace")),
                        "EngineOptions.model_sha256")
            session = C.c_void_p()
            L.check(L.fe_session_create(model, C.byref(sp), C.byref(session)), "cannot create the session")
            self._session = session
        except BaseException:
            self.close()
            raise
        self.load_ms = (time.perf_counter() - t0) * 1e3
        info = _native.ModelInfo()
        L.check(L.fe_model_get_info(model, C.byref(info)))
        self.model_info = info
        self.n_params = int(info.n_params)
        self.n_ctx = int(sp.n_ctx)
        self.n_threads = int(sp.n_threads)
        self.n_vocab = int(info.n_vocab)
        self._lock = threading.Lock()  # one call into the session at a time (cancel excepted)
        if options.adapters:
            try:
                spec = options.adapters
                if isinstance(spec, (str, os.PathLike)):
                    spec = [spec]
                pairs = spec.items() if isinstance(spec, Mapping) else [(p, 1.0) for p in spec]
                self.set_adapters({self.load_adapter(p): s for p, s in pairs})
            except BaseException:
                self.close()
                raise

    # lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Free the session and the model. Idempotent. An open stream is ended ('cancelled'); closing
        while another thread is inside a generation step is an EngineBusyError (cancel() first)."""
        if self._session is None and self._model is None:
            self._closed = True
            return
        if not self._step_lock.acquire(blocking=False):
            raise EngineBusyError("cannot close an Engine while it generates on another thread; cancel() it and "
                                  "let that stream finish first")
        try:
            L = _native.lib()
            if self._session is not None:
                L.fe_request_end(self._session)
                L.fe_session_free(self._session)
                self._session = None
            self._free_adapters()  # before the model: adapters belong to it
            if self._model is not None:
                L.fe_model_free(self._model)
                self._model = None
            self._closed = True
        finally:
            self._step_lock.release()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _require(self) -> None:
        if self._closed:
            raise FinLLMEdgeError("this Engine is closed")

    def cancel(self) -> None:
        """Stop the running generation (safe from any thread; a prefill stops within milliseconds)."""
        if not self._closed and self._session is not None:
            _native.lib().fe_session_cancel(self._session)

    # tokens ------------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        self._require()
        return _native.tokenize(self._model, text, add_special, parse_special)

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        """Text of token ids; ids outside the vocabulary are an InvalidArgumentError (the core checks)."""
        self._require()
        L = _native.lib()
        arr, n = _native.token_array(tokens)
        raw = _native.read_sized(lambda b, sz, out: L.fe_detokenize(self._model, arr, n, special, b, sz, out),
                                 "detokenize", 64 + 8 * n)
        return raw.decode("utf-8", errors="replace")

    def token_piece(self, token: int, *, special: bool = True) -> str:
        self._require()
        L = _native.lib()
        raw = _native.read_sized(lambda b, sz, out: L.fe_token_piece(self._model, int(token), special, b, sz, out),
                                 "token_piece", 64)
        return raw.decode("utf-8", errors="replace")

    @property
    def eos_token(self) -> int:
        self._require()
        return int(_native.lib().fe_token_eos(self._model))

    @property
    def bos_token(self) -> int:
        self._require()
        return int(_native.lib().fe_token_bos(self._model))

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as text, None when the key is absent."""
        self._require()
        L = _native.lib()
        try:
            raw = _native.read_sized(lambda b, sz, out: L.fe_model_meta(self._model, key.encode(), b, sz, out),
                                     "metadata", 256)
        except InvalidArgumentError:
            return None
        return raw.decode("utf-8", errors="replace")

    # chat --------------------------------------------------------------------------------
    def format_chat(self, messages: Iterable[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt the model's chat template makes of `messages` (rendered by the core)."""
        self._require()
        L = _native.lib()
        arr, n, _keep = _native.chat_array(list(messages))
        raw = _native.read_sized(
            lambda b, sz, out: L.fe_chat_format(self._model, arr, n, add_generation_prompt, b, sz, out),
            "chat template", 1024)
        return raw.decode("utf-8", errors="replace")

    def count_chat_tokens(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """Prompt tokens `chat(messages)` would evaluate (template + generation prompt)."""
        with self._lock:
            self._require()
            return _native.count_chat_tokens(self._model, messages)

    def chat(self, messages: Iterable[Mapping[str, Any]], max_tokens: int = 256, **kwargs: Any) -> TokenStream:
        """Like generate(), on the prompt the model's chat template makes of `messages`."""
        L = _native.lib()
        arr, n, keep = _native.chat_array(list(messages))
        return self._stream(lambda gp: L.fe_request_start_chat(self._session, arr, n, C.byref(gp)), max_tokens,
                            keep=keep, **kwargs)

    # generation --------------------------------------------------------------------------
    def generate(self, prompt: str, max_tokens: int = 256, *, add_special: bool = True,
                 parse_special: bool = False, **kwargs: Any) -> TokenStream:
        """Stream the continuation of `prompt` as text pieces (valid UTF-8, stop strings removed).

        Sampling: temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed (or
        sampling=SamplingOptions(...)); stop=[...]; ignore_eos. Structured output (at most one):
        grammar= (GBNF text), json_schema= (dict or JSON text), response_format= (OpenAI's shape:
        {"type": "json_object"} or {"type": "json_schema", "json_schema": {"name": ..., "schema":
        {...}}}); the core converts and bounds them (GrammarError when refused) and the answer
        ends when the grammar is complete (see finllm_edge.structured). Raises ContextOverflowError
        right away when the prompt does not fit in n_ctx, InvalidArgumentError for an option
        out of range, EngineBusyError while another generation of this Engine is open.
        """
        if not isinstance(prompt, str):
            raise InvalidArgumentError(f"prompt must be str, got {type(prompt).__name__}")
        L = _native.lib()
        data = prompt.encode("utf-8")

        def start(gp):
            gp.add_special, gp.parse_special = bool(add_special), bool(parse_special)
            return L.fe_request_start(self._session, data, C.byref(gp))

        return self._stream(start, max_tokens, **kwargs)

    def generate_tokens(self, tokens: Sequence[int], max_tokens: int = 256, **kwargs: Any) -> TokenStream:
        """Like generate(), from prompt token ids."""
        L = _native.lib()
        arr, n = _native.token_array(tokens)
        return self._stream(lambda gp: L.fe_request_start_tokens(self._session, arr, n, C.byref(gp)), max_tokens,
                            **kwargs)

    def _stream(self, start, max_tokens: int, **kwargs: Any) -> TokenStream:
        req = NativeRequest(max_tokens, self.options.seed, **kwargs)
        with self._lock:
            self._start(start, req)
        return TokenStream(self, _CoreSteps(self))

    def _start(self, start, req: NativeRequest) -> None:
        self._require()
        st = start(req.gp)  # the core copies the prompt, the stop strings and the constraint's text
        if st != _native.FE_OK:
            raise req.error(st)

    def _times_of_last(self) -> RunTimes:
        L = _native.lib()
        p = _native.Profile()
        L.check(L.fe_session_get_profile(self._session, C.byref(p)))
        return RunTimes(ttft_ms=p.ttft_ms, prefill_ms=p.prefill_ms, e2e_ms=p.e2e_ms, n_prompt=p.n_prompt,
                        n_gen=p.n_gen, token_ms=[p.token_ms[i] for i in range(p.n_token_ms)],
                        n_prompt_reused=p.n_prompt_reused)

    # KV cache and saved prompt state ----------------------------------------------------------
    def reset(self) -> None:
        """Forget the KV cache (the next request evaluates its whole prompt)."""
        self._require()
        with self._lock:
            _native.lib().check(_native.lib().fe_session_reset(self._session), "reset")

    def settle(self) -> int:
        """Evaluate again, as a prompt, the cached tokens that exact reuse cannot take (the answer just
        generated), so that the next request reuses them: call it while idle (the user reads the answer)
        and the next chat turn evaluates only the new message, token-identical to no reuse. Returns the
        tokens evaluated (0: nothing to settle). cancel() stops it (CancelledError); see
        fe_session_settle."""
        self._require()
        L = _native.lib()
        n = C.c_int32(0)
        with self._lock, self._step_lock:
            L.check(L.fe_session_settle(self._session, C.byref(n)), "settle")
        return n.value

    def cached_tokens(self) -> list[int]:
        """The tokens the session's KV cache holds now."""
        self._require()
        L = _native.lib()
        n = C.c_int32(0)
        with self._lock:
            L.check(L.fe_session_cached_tokens(self._session, None, 0, C.byref(n)))
            buf = (C.c_int32 * max(1, n.value))()
            L.check(L.fe_session_cached_tokens(self._session, buf, n.value, C.byref(n)))
        return list(buf[: n.value])

    def save_state(self, path: str | os.PathLike, prompt: str | None = None,
                   messages: Iterable[Mapping[str, Any]] | None = None, *, add_special: bool = True,
                   parse_special: bool = False) -> int:
        """Save the KV state of a prompt prefix to `path` (written atomically), for load_state() in
        a later process; returns its token count. Give exactly one of `prompt` (tokenized as
        generate() does, with the same add_special/parse_special) or `messages` (rendered with the
        chat template without the generation prompt, as chat() renders them: a later chat() whose
        messages start with these reuses the state). Evaluates the prefix when it is not cached."""
        self._require()
        if (prompt is None) == (messages is None):
            raise InvalidArgumentError("save_state: give exactly one of prompt= or messages=")
        L = _native.lib()
        target = os.fsencode(os.fspath(path))
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InvalidArgumentError(f"prompt must be str, got {type(prompt).__name__}")
            tokens = self.tokenize(prompt, add_special=add_special, parse_special=parse_special)
            arr, n = _native.token_array(tokens)
            with self._lock:
                L.check(L.fe_session_save_prefix(self._session, arr, n, target), "save_state")
            return n
        arr, n, _keep = _native.chat_array(list(messages))
        with self._lock:
            L.check(L.fe_session_save_chat(self._session, arr, n, target), "save_state")
            count = C.c_int32(0)
            L.check(L.fe_session_cached_tokens(self._session, None, 0, C.byref(count)))
        return int(count.value)

    def load_state(self, path: str | os.PathLike) -> int:
        """Replace the KV cache with the prefix saved in `path` by save_state(); returns its token
        count. A file made for another model or llama.cpp build, truncated, altered or hand-made
        is refused with StateFileError (the cache is then empty); a missing file is
        ModelNotFoundError (a FileNotFoundError)."""
        self._require()
        L = _native.lib()
        with self._lock:
            st = L.fe_session_load_state(self._session, os.fsencode(os.fspath(path)))
            if st == -3:  # FE_ERR_BAD_MODEL: the file was refused
                raise StateFileError(L.error(st).args[0])
            L.check(st, "load_state")
            n = C.c_int32(0)
            L.check(L.fe_session_cached_tokens(self._session, None, 0, C.byref(n)))
        return int(n.value)

    # drift monitoring (finllm_edge/drift.py) ------------------------------------------------
    def enable_drift(self, reference_path: str | os.PathLike | None):
        """Monitor the prompts of this Engine against a drift reference (`finllm-edge convert` writes
        drift-ref.fedrift); returns the DriftMonitor (status(), state_json()). None detaches. A file made
        for another tokenizer, truncated or altered is a DriftReferenceError."""
        from .drift import enable_drift

        return enable_drift(self, reference_path)

    # profiles ----------------------------------------------------------------------------
    def _profile_meta(self, meta: _native.ProfileMeta) -> None:
        meta.model = self._model
        meta.model_path = os.fsencode(self.model_path)

    def benchmark_tokens(self, n_prompt: int) -> list[int]:
        """The core's deterministic benchmark prompt (finance text) cut to exactly n_prompt tokens."""
        text = _native.lib().fe_bench_text().decode()
        tokens = self.tokenize(text, add_special=False)
        while len(tokens) < n_prompt:
            tokens += tokens
        return tokens[:n_prompt]

    def benchmark(self, n_prompt: int = 64, n_gen: int = 64, repetitions: int = 3, warmup: int = 1) -> dict:
        """llama-bench-like (the core's fe_benchmark, as fe-bench runs it): `warmup` + `repetitions`
        runs of prefill n_prompt + greedy decode n_gen; returns their LatencyProfile."""
        self._require()
        L = _native.lib()
        bp = L.fe_bench_default_params()
        bp.n_prompt = _int_option("n_prompt", n_prompt, 1)
        bp.n_gen = _int_option("n_gen", n_gen, 1)
        bp.repetitions = _int_option("repetitions", repetitions, 1)
        bp.warmup = _int_option("warmup", warmup, 0)
        res = _native.BenchResult()
        with self._lock:
            L.check(L.fe_benchmark(self._session, C.byref(bp), C.byref(res)), "benchmark")
        try:
            runs = []
            for i in range(res.n_runs):
                r = res.runs[i]
                runs.append(RunTimes(r.ttft_ms, r.prefill_ms, r.e2e_ms, r.n_prompt, r.n_gen,
                                     [r.token_ms[k] for k in range(r.n_token_ms)]))
            before = C.string_at(res.thermal_before_json).decode() if res.thermal_before_json else None
        finally:
            L.fe_bench_result_free(C.byref(res))
        return self._set_benchmark(runs, int(warmup), before)
