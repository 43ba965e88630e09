"""finllm_edge.Engine: run a GGUF model with llama.cpp and profile every generation.

    from finllm_edge import Engine

    with Engine("model.gguf", n_ctx=2048) as engine:           # n_threads: the big cores
        for piece in engine.chat([{"role": "user", "content": "What is EBITDA?"}], max_tokens=64):
            print(piece, end="", flush=True)
        print(engine.last_profile["decode_tok_s"])

Thread safety: one generation at a time per Engine (several Engines may run in one process,
each on its own thread). `cancel()` may be called from any thread; the running generation
stops after the token in flight. Breaking out of the iterator (or `stream.close()`) stops it too.

Layers: llama_cpp.llama_cpp (ctypes bindings) -> finllm_edge._llama (owning wrappers) -> here.
"""

from __future__ import annotations

import codecs
import os
import threading
import time
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from . import _llama
from .chat_template import ChatTemplate
from .device_info import device_block, thermal_snapshot
from .errors import ContextOverflowError, FinLLMEdgeError, TemplateError
from .models import default_model_path
from .profiler import ModelInfo, RunTimings, build_profile
from .threads import ThreadChoice, choose_threads

_now = time.perf_counter

BENCH_TEXT = (
    "Quarterly revenue rose 12% while operating margin narrowed as input costs climbed; the "
    "board kept the dividend, extended the buyback and guided free cash flow toward the top of "
    "the range, citing lower capital expenditure and a stronger order book in the services unit. "
)


@dataclass(frozen=True)
class EngineOptions:
    """How a model is loaded and how its context is sized."""

    n_threads: int | None = None  # None: one thread per performance core (finllm_edge.threads)
    n_ctx: int = 2048
    n_batch: int = 512
    n_ubatch: int = 512
    seed: int | None = None  # default seed of sampled (temperature > 0) generations
    use_mmap: bool = True
    repack: bool = True  # let llama.cpp repack Q4_0/Q4_K weights for the CPU's dot-product kernels
    flash_attn: bool | None = None  # None: llama.cpp decides
    threadpool: bool = True  # a persistent ggml threadpool, as llama-bench uses (else one per decode)
    chat_template: str | None = None  # overrides the GGUF's tokenizer.chat_template


@dataclass(frozen=True)
class SamplingOptions:
    """temperature <= 0 is greedy (top_k/top_p/min_p are then ignored)."""

    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None


@dataclass(frozen=True)
class GenerationOptions:
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # benchmarks: always generate max_tokens


@dataclass(frozen=True)
class Completion:
    text: str
    tokens: list[int]
    finish_reason: str
    profile: dict | None = None


class TokenStream:
    """Iterator of text pieces of one generation; `.text`, `.finish_reason`, `.profile` after it ends."""

    def __init__(self, engine: "Engine", gen: Iterator[str], timings: RunTimings) -> None:
        self._engine = engine
        self._gen = gen
        self.timings = timings
        self.text = ""
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.thread_id: int | None = None  # the thread that last iterated this stream
        self._profile: dict | None = None

    def __iter__(self) -> "TokenStream":
        return self

    def __next__(self) -> str:
        self.thread_id = threading.get_ident()
        piece = next(self._gen)
        self.text += piece
        return piece

    def close(self) -> None:
        self._gen.close()

    @property
    def running(self) -> bool:
        return bool(getattr(self._gen, "gi_running", False))

    @property
    def profile(self) -> dict:
        """LatencyProfile of this generation (after it ended)."""
        if self.finish_reason is None:
            raise FinLLMEdgeError("the generation has not finished; iterate it to the end (or close it) first")
        if self._profile is None:
            self._profile = self._engine._profile_for([self.timings])
        return self._profile


class Engine:
    """A loaded model and one llama.cpp context. See the module docstring."""

    def __init__(self, model_path: str | os.PathLike | None = None, n_threads: int | None = None,
                 n_ctx: int = 2048, n_batch: int = 512, seed: int | None = None, *,
                 options: EngineOptions | None = None, **kwargs: Any) -> None:
        if options is None:
            options = EngineOptions(n_threads=n_threads, n_ctx=n_ctx, n_batch=n_batch, seed=seed, **kwargs)
        elif kwargs:
            options = replace(options, **kwargs)
        if options.n_ctx <= 0:
            raise ValueError(f"n_ctx must be positive, got {options.n_ctx}")
        self.options = options
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        self.threads: ThreadChoice = choose_threads(options.n_threads)
        self._model: _llama.Model | None = None
        self._ctx: _llama.Context | None = None
        self._batch: _llama.Batch | None = None
        self._closed = False
        self._cancel = threading.Event()
        self._lock = threading.RLock()
        self._active: weakref.ReferenceType[TokenStream] | None = None
        self._busy = False
        t0 = _now()
        try:
            self._model = _llama.Model(self.model_path, use_mmap=options.use_mmap, repack=options.repack)
            self._ctx = _llama.Context(self._model, _llama.ContextParams(
                n_ctx=options.n_ctx, n_batch=options.n_batch, n_ubatch=options.n_ubatch,
                n_threads=self.threads.n_threads, n_threads_batch=self.threads.n_threads,
                flash_attn=options.flash_attn, threadpool=options.threadpool))
            self._batch = _llama.Batch(self._ctx.n_batch)
        except BaseException:
            self.close()
            raise
        self.load_ms = (_now() - t0) * 1e3
        self.n_ctx = self._ctx.n_ctx
        m = self._model
        n_params = max(1, m.n_params())
        self.model_info = ModelInfo(path=str(self.model_path), size_bytes=self.model_path.stat().st_size,
                                    model_type=m.desc(), bits_per_weight=8.0 * m.size_bytes() / n_params)
        self.n_params = n_params
        self._device = device_block(self.threads)
        self._template: ChatTemplate | None = None
        self._last_runs: list[RunTimings] = []
        self._last_profile: dict | None = None
        self._last_warmup = 0
        self._last_thermal: dict | None = None

    # lifecycle ---------------------------------------------------------------------------
    def _release_abandoned(self) -> None:
        """Close a stream the caller dropped or left suspended (not one running in another thread)."""
        ref = self._active
        if ref is None:
            return  # busy with complete()/benchmark() on another thread
        active = ref()
        if active is None:
            self._busy = False  # never started, then garbage-collected
        elif not active.running and active.thread_id in (None, threading.get_ident()):
            # suspended in this very thread (the caller broke out of the loop): finish it
            active.close()
            self._busy = False

    def close(self) -> None:
        """Free the context and the model. Idempotent. Stop a generation running on another thread first."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            with lock:
                if self._busy:
                    self._release_abandoned()
                    if self._busy:
                        raise FinLLMEdgeError("cannot close an Engine while it generates; cancel() first")
        for name in ("_batch", "_ctx", "_model"):
            obj = getattr(self, name, None)
            if obj is not None:
                obj.close()
                setattr(self, name, None)
        self._closed = True

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        return self._closed

    def cancel(self) -> None:
        """Stop the running generation after the token in flight (safe from any thread)."""
        self._cancel.set()

    # tokens ------------------------------------------------------------------------------
    def _require(self) -> tuple[_llama.Model, _llama.Context, _llama.Batch]:
        if self._closed or self._model is None or self._ctx is None or self._batch is None:
            raise FinLLMEdgeError("this Engine is closed")
        return self._model, self._ctx, self._batch

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        model, _, _ = self._require()
        return model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        model, _, _ = self._require()
        return model.detokenize(list(tokens)).decode("utf-8", errors="replace")

    def metadata(self, key: str) -> str | None:
        model, _, _ = self._require()
        return model.meta(key)

    # chat --------------------------------------------------------------------------------
    @property
    def chat_template(self) -> ChatTemplate:
        if self._template is None:
            model, _, _ = self._require()
            source = self.options.chat_template or model.chat_template()
            if not source:
                raise TemplateError(f"{self.model_path.name} has no tokenizer.chat_template; pass "
                                    "EngineOptions(chat_template=...) or use generate() with a raw prompt")
            self._template = ChatTemplate(
                source, bos_token=model.token_to_piece(model.bos, special=True).decode("utf-8", "replace"),
                eos_token=model.token_to_piece(model.eos, special=True).decode("utf-8", "replace"),
                name=f"chat template of {self.model_path.name}")
        return self._template

    def format_chat(self, messages: Iterable[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    def chat(self, messages: Iterable[Mapping[str, Any]], max_tokens: int = 256, **kwargs: Any) -> TokenStream:
        """Like generate(), on the prompt the model's own chat template makes of `messages`."""
        prompt = self.format_chat(messages)
        bos = self.chat_template.bos_token
        add_special = not (bos and prompt.startswith(bos))
        return self.generate(prompt, max_tokens, add_special=add_special, parse_special=True, **kwargs)

    # generation --------------------------------------------------------------------------
    def _sampler_params(self, sampling: SamplingOptions) -> _llama.SamplerParams:
        seed = sampling.seed if sampling.seed is not None else self.options.seed
        return _llama.SamplerParams(
            temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
            min_p=sampling.min_p, repeat_penalty=sampling.repeat_penalty, repeat_last_n=sampling.repeat_last_n,
            seed=_llama.lc.LLAMA_DEFAULT_SEED if seed is None else seed)

    def _prepare(self, tokens: list[int], gen: GenerationOptions) -> None:
        if gen.max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {gen.max_tokens}")
        if not tokens:
            raise ValueError("the prompt is empty (no tokens)")
        if len(tokens) >= self.n_ctx:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens but the context holds {self.n_ctx} (and at least one "
                f"generated token); create the Engine with n_ctx > {len(tokens)} or shorten the prompt")
        with self._lock:
            if self._busy:
                self._release_abandoned()
                if self._busy:
                    raise FinLLMEdgeError("this Engine is already generating (one generation at a time per "
                                          "Engine); cancel() it, finish it, or use a second Engine")
            self._busy = True
        self._cancel.clear()

    def _token_loop(self, tokens: list[int], gen: GenerationOptions, sampling: _llama.SamplerParams,
                    t: RunTimings, state: dict) -> Iterator[int]:
        """Prefill, then sample/decode one token at a time; yields sampled token ids (EOS excluded)."""
        model, ctx, batch = self._require()
        sampler = _llama.Sampler(model, sampling)
        cancel = self._cancel
        n = len(tokens)
        try:
            ctx.clear()
            t.n_prompt = n
            t.t_prefill_start = _now()
            step = ctx.n_batch
            for i in range(0, n, step):
                if cancel.is_set():
                    state["finish"] = "cancelled"
                    return
                chunk = tokens[i:i + step]
                batch.set(chunk, i, logits_last=(i + len(chunk) == n))
                ctx.decode(batch)
            t.t_prefill_end = _now()
            if gen.max_tokens == 0:
                state["finish"] = "length"
                return
            pos = n
            lat = t.token_ms
            tok = sampler.sample(ctx)
            t.t_first_token = _now()
            t.n_gen = 1
            while True:
                if not gen.ignore_eos and model.is_eog(tok):
                    state["finish"] = "eos"
                    return
                yield tok
                if cancel.is_set():
                    state["finish"] = "cancelled"
                    return
                if t.n_gen >= gen.max_tokens:
                    state["finish"] = "length"
                    return
                if pos >= self.n_ctx:
                    state["finish"] = "context"
                    return
                t0 = _now()
                batch.set_one(tok, pos)
                ctx.decode(batch)
                pos += 1
                tok = sampler.sample(ctx)
                lat.append((_now() - t0) * 1e3)
                t.n_gen += 1
        finally:
            t.t_end = _now()
            sampler.close()

    def _finish(self, t: RunTimings) -> None:
        self._last_runs = [t]
        self._last_warmup = 0
        self._last_profile = None
        self._last_thermal = None
        with self._lock:
            self._busy = False

    def _stream_text(self, token_iter: Iterator[int], stops: tuple[str, ...], t: RunTimings,
                     state: dict, stream_ref: list) -> Iterator[str]:
        model = self._model
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        stream: TokenStream = stream_ref[0]
        try:
            for tok in token_iter:
                stream.tokens.append(tok)
                pending += decoder.decode(model.token_to_piece(tok))
                if not pending:
                    continue
                if stops:
                    cut = _find_stop(pending, stops)
                    if cut is not None:
                        state["finish"] = "stop"
                        if cut:
                            yield pending[:cut]
                        pending = ""
                        return
                    keep = _stop_prefix_len(pending, stops)
                    out, pending = pending[:len(pending) - keep], pending[len(pending) - keep:]
                else:
                    out, pending = pending, ""
                if out:
                    yield out
            pending += decoder.decode(b"", final=True)
            if stops:
                cut = _find_stop(pending, stops)
                if cut is not None:
                    state["finish"] = "stop"
                    pending = pending[:cut]
            if pending:
                yield pending
        finally:
            token_iter.close()
            stream.finish_reason = state.get("finish", "cancelled")
            self._finish(t)

    def generate(self, prompt: str, max_tokens: int = 256, *, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, min_p: float | None = None,
                 repeat_penalty: float | None = None, seed: int | None = None,
                 stop: Sequence[str] | str | None = None, sampling: SamplingOptions | None = None,
                 ignore_eos: bool = False, add_special: bool = True, parse_special: bool = False) -> TokenStream:
        """Stream the continuation of `prompt` as text pieces (valid UTF-8, stop strings removed).

        Raises ContextOverflowError right away when the prompt does not fit in n_ctx.
        """
        t = RunTimings(t_request=_now())
        sampling = _merge_sampling(sampling, temperature, top_k, top_p, min_p, repeat_penalty, seed)
        stops = _stops(stop)
        gen = GenerationOptions(max_tokens=max_tokens, stop=stops, ignore_eos=ignore_eos)
        tokens = self.tokenize(prompt, add_special=add_special, parse_special=parse_special)
        self._prepare(tokens, gen)
        state: dict = {}
        try:
            token_iter = self._token_loop(tokens, gen, self._sampler_params(sampling), t, state)
        except BaseException:
            self._finish(t)
            raise
        ref: list = []
        stream = TokenStream(self, self._stream_text(token_iter, stops, t, state, ref), t)
        ref.append(stream)
        self._active = weakref.ref(stream)
        return stream

    def complete(self, prompt: str, max_tokens: int = 256, *, stop: Sequence[str] | str | None = None,
                 sampling: SamplingOptions | None = None, ignore_eos: bool = False, add_special: bool = True,
                 parse_special: bool = False, **sampling_kw: Any) -> Completion:
        """Non-streaming: the whole answer at once (detokenized in one call), with its profile."""
        t = RunTimings(t_request=_now())
        sampling = _merge_sampling(sampling, **sampling_kw)
        stops = _stops(stop)
        gen = GenerationOptions(max_tokens=max_tokens, stop=stops, ignore_eos=ignore_eos)
        tokens = self.tokenize(prompt, add_special=add_special, parse_special=parse_special)
        self._prepare(tokens, gen)
        self._active = None
        state: dict = {}
        out: list[int] = []
        raw = bytearray()
        stop_bytes = [s.encode("utf-8") for s in stops]
        longest = max((len(s) for s in stop_bytes), default=0)
        try:
            loop = self._token_loop(tokens, gen, self._sampler_params(sampling), t, state)
            for tok in loop:
                out.append(tok)
                if stop_bytes:
                    start = max(0, len(raw) - longest)
                    raw += self._model.token_to_piece(tok)
                    if any(raw.find(s, start) >= 0 for s in stop_bytes):
                        state["finish"] = "stop"
                        loop.close()
                        break
        finally:
            self._finish(t)
        text = self._model.detokenize(out).decode("utf-8", errors="replace")
        if stops:
            cut = _find_stop(text, stops)
            if cut is not None:
                text = text[:cut]
        return Completion(text=text, tokens=out, finish_reason=state.get("finish", "cancelled"),
                          profile=self.last_profile)

    # profiles ----------------------------------------------------------------------------
    def _profile_for(self, runs: list[RunTimings], warmup: int = 0, thermal: dict | None = None) -> dict:
        if thermal is None:
            after = thermal_snapshot()
            thermal = {"after": after} if after else None
        return build_profile(runs, model=self.model_info, device=self._device, n_threads=self.threads.n_threads,
                             n_ctx=self.n_ctx, load_ms=self.load_ms, warmup=warmup, thermal=thermal)

    @property
    def last_profile(self) -> dict | None:
        """LatencyProfile of the last finished generation or benchmark (None before the first)."""
        if not self._last_runs:
            return None
        if self._last_profile is None:
            self._last_profile = self._profile_for(self._last_runs, self._last_warmup, self._last_thermal)
        return self._last_profile

    def benchmark_tokens(self, n_prompt: int) -> list[int]:
        """A deterministic prompt of exactly n_prompt tokens (finance text, repeated)."""
        text = BENCH_TEXT
        tokens = self.tokenize(text, add_special=False)
        while len(tokens) < n_prompt:
            text += BENCH_TEXT
            tokens = self.tokenize(text, add_special=False)
        return tokens[:n_prompt]

    def benchmark(self, n_prompt: int = 64, n_gen: int = 64, repetitions: int = 3, warmup: int = 1) -> dict:
        """llama-bench-like: warm-up runs, then `repetitions` of prefill n_prompt + greedy decode n_gen."""
        if n_prompt < 1 or n_gen < 1 or repetitions < 1 or warmup < 0:
            raise ValueError("n_prompt, n_gen and repetitions must be >= 1 and warmup >= 0")
        if n_prompt + n_gen > self.n_ctx:
            raise ContextOverflowError(f"n_prompt + n_gen = {n_prompt + n_gen} exceeds n_ctx = {self.n_ctx}")
        tokens = self.benchmark_tokens(n_prompt)
        before = thermal_snapshot()
        runs: list[RunTimings] = []
        greedy = self._sampler_params(SamplingOptions(temperature=0.0))
        gen = GenerationOptions(max_tokens=n_gen, ignore_eos=True)
        for i in range(warmup + repetitions):
            t = RunTimings(t_request=_now())
            self._prepare(tokens, gen)
            self._active = None
            state: dict = {}
            try:
                for _ in self._token_loop(tokens, gen, greedy, t, state):
                    pass
            finally:
                with self._lock:
                    self._busy = False
            if state.get("finish") == "cancelled":
                raise FinLLMEdgeError("benchmark cancelled")
            if i >= warmup:
                runs.append(t)
        after = thermal_snapshot()
        self._last_runs, self._last_warmup = runs, warmup
        self._last_thermal = {"before": before, "after": after} if (before or after) else None
        self._last_profile = None
        return self.last_profile


def _merge_sampling(base: SamplingOptions | None, temperature: float | None = None, top_k: int | None = None,
                    top_p: float | None = None, min_p: float | None = None, repeat_penalty: float | None = None,
                    seed: int | None = None) -> SamplingOptions:
    s = base or SamplingOptions()
    changes = {k: v for k, v in dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                     repeat_penalty=repeat_penalty, seed=seed).items() if v is not None}
    return replace(s, **changes) if changes else s


def _stops(stop: Sequence[str] | str | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = (stop,)
    return tuple(s for s in stop if s)


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
