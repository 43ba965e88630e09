"""OnnxEngine: the onnxruntime-genai runtime with the GGUF Engine's interface and LatencyProfile.

    from finllm_edge.onnx_engine import OnnxEngine
    with OnnxEngine("out/onnx-int4", n_threads=2) as eng:
        stream = eng.generate("What is EBITDA?", max_tokens=64)
        for piece in stream:
            print(piece, end="", flush=True)
        print(stream.profile["decode_tok_s"])        # same as eng.last_profile

Same surface as finllm_edge.Engine: generate() -> a stream of text pieces (.text, .finish_reason,
.profile, .close()), chat(messages) with the folder's chat template rendered in the project's Jinja
sandbox, metadata("tokenizer.chat_template"), benchmark(n_prompt, n_gen, repetitions, warmup),
cancel() from any thread, close() and a context manager. Temperature <= 0 is greedy, otherwise
top-k/top-p sampling with a seed. Stop strings end the stream (the stop text is not yielded).
One generation at a time per engine. Profiles are built by finllm_edge.profiler (same schema;
tool "finllm_edge.OnnxEngine", model_type "onnx-int4", llama_cpp_version "n/a (onnxruntime-genai X)").

The folder is checked by `onnx_validate.validate_model_dir` before onnxruntime-genai opens it.
onnxruntime_genai is imported lazily, so `import finllm_edge` never needs it.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .device_info import device_block, thermal_snapshot
from .errors import ContextOverflowError, FinLLMEdgeError, ModelNotFoundError
from .onnx_validate import validate_model_dir
from .profiler import ModelInfo, RunTimings, build_profile
from .threads import choose_threads

TOOL = "finllm_edge.OnnxEngine"
DEFAULT_CTX = 2048
_now = time.perf_counter


def _og():
    try:
        import onnxruntime_genai as og
    except ImportError as exc:
        raise ModelNotFoundError(
            "running ONNX models needs onnxruntime-genai: pip install onnxruntime-genai==0.18.0 onnx==1.23.2"
        ) from exc
    return og


def is_onnx_model_dir(path) -> bool:
    """True for a folder holding genai_config.json: what `finllm-edge run/bench` should hand to OnnxEngine."""
    p = Path(path)
    return p.is_dir() and (p / "genai_config.json").exists()


class OnnxStream:
    """Iterator of text pieces of one generation; `.text`, `.finish_reason`, `.profile` after it ends."""

    def __init__(self, engine: "OnnxEngine", gen: Iterator[str], timings: RunTimings) -> None:
        self._engine, self._gen, self.timings = engine, gen, timings
        self.text = ""
        self.tokens: list[int] = []
        # filled by the engine's generator; the generator never references this object, so
        # dropping the stream (e.g. `break` in a for loop) closes the generation at once
        self._state: dict = {}
        self._profile: dict | None = None

    @property
    def finish_reason(self) -> str | None:
        """'length', 'eos', 'stop' or 'cancelled' once the generation ended, else None."""
        return self._state.get("ended")

    def __iter__(self) -> "OnnxStream":
        return self

    def __next__(self) -> str:
        piece = next(self._gen)
        self.text += piece
        return piece

    def close(self) -> None:
        self._gen.close()

    @property
    def profile(self) -> dict:
        if self.finish_reason is None:
            raise FinLLMEdgeError("the generation has not finished; iterate it to the end (or close it) first")
        if self._profile is None:
            self._profile = self._engine._profile_for([self.timings])
        return self._profile


class OnnxEngine:
    """A loaded onnxruntime-genai model. See the module docstring."""

    def __init__(self, model_dir, n_threads: int | None = None, n_ctx: int = DEFAULT_CTX, seed: int | None = None,
                 *, options: Any = None) -> None:
        if options is not None:  # a finllm_edge.engine.EngineOptions (duck-typed: no llama_cpp import)
            n_threads, n_ctx, seed = options.n_threads, options.n_ctx, options.seed
        og = _og()
        self.info = validate_model_dir(model_dir)
        self.model_dir = Path(model_dir)
        self.model_path = self.info.model_path
        self.threads = choose_threads(n_threads)
        self.n_threads = self.threads.n_threads
        self.n_ctx = int(min(n_ctx, self.info.genai_config["model"].get("context_length", n_ctx)))
        self.seed = 0 if seed is None else int(seed)
        self.model_info = ModelInfo(path=str(self.info.model_path), size_bytes=self.info.size_bytes,
                                    model_type=f"onnx-{self.info.precision}",
                                    bits_per_weight=self.info.bits_per_weight)
        self._device = device_block(self.threads)
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._busy = False
        self._closed = False
        self._last_runs: list[RunTimings] = []
        self._last_warmup = 0
        self._last_thermal: dict | None = None
        self._last_profile: dict | None = None
        t0 = _now()
        try:
            config = og.Config(str(self.model_dir))
            config.clear_providers()  # CPU execution provider
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                "intra_op_num_threads": self.n_threads, "inter_op_num_threads": 1}}}}))
            self._model = og.Model(config)
            self._tokenizer = og.Tokenizer(self._model)
        except Exception as exc:  # the validator passed, so this is a runtime-level refusal
            raise FinLLMEdgeError(f"onnxruntime-genai could not load {self.model_dir}: {exc}; "
                                  "re-export it with this onnxruntime-genai version") from exc
        self.load_ms = (_now() - t0) * 1e3
        self._og_version = getattr(og, "__version__", "?")
        eos = self.info.genai_config["model"].get("eos_token_id", [])
        self._eos = set(eos if isinstance(eos, list) else [eos])

    # lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Free the model; idempotent. A generation in flight is cancelled first."""
        self._cancel.set()
        with self._lock:
            self._tokenizer = self._model = None
            self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "OnnxEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cancel(self) -> None:
        """Stop the running generation after its current token (safe from any thread)."""
        self._cancel.set()

    # text ----------------------------------------------------------------------------------
    def _require(self):
        if self._closed:
            raise FinLLMEdgeError("this OnnxEngine is closed; create a new one")
        return self._model, self._tokenizer

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self._require()[1].encode(text)]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._require()[1].decode(list(tokens))

    def metadata(self, key: str) -> str | None:
        if key == "tokenizer.chat_template":
            path = self.model_dir / "chat_template.jinja"
            if path.is_file():
                return path.read_text(encoding="utf-8")
            cfg = self.model_dir / "tokenizer_config.json"
            if cfg.is_file():
                return json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        return None

    def format_chat(self, messages: Iterable[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        from .chat_template import ChatTemplate
        from .errors import TemplateError

        source = self.metadata("tokenizer.chat_template")
        if not source:
            raise TemplateError(f"{self.model_dir} has no chat template; use generate() with a raw prompt")
        return ChatTemplate(source, name=f"{self.model_dir.name} chat template").render(
            messages, add_generation_prompt=add_generation_prompt)

    def chat(self, messages: Iterable[Mapping[str, Any]], max_tokens: int = 256, **kwargs: Any) -> OnnxStream:
        return self.generate(self.format_chat(messages), max_tokens, **kwargs)

    # generation ----------------------------------------------------------------------------
    def generate(self, prompt: str, max_tokens: int = 256, *, temperature: float | None = None,
                 top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
                 stop: Sequence[str] | str | None = None, sampling: Any = None, ignore_eos: bool = False,
                 **_llama_only: Any) -> OnnxStream:
        """Stream the continuation of `prompt` as text pieces (stop strings removed).

        `sampling` may be a finllm_edge.engine.SamplingOptions; explicit keywords override it.
        Keywords only the llama.cpp Engine honours (min_p, repeat_penalty, add_special, ...) are ignored.
        """
        self._require()
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        pick = lambda v, name, d: v if v is not None else getattr(sampling, name, d)  # noqa: E731
        search = dict(temperature=pick(temperature, "temperature", 0.0), top_k=pick(top_k, "top_k", 40),
                      top_p=pick(top_p, "top_p", 0.95), seed=pick(seed, "seed", None))
        stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
        t = RunTimings(t_request=_now())
        ids = self.tokenize(prompt)
        if len(ids) + max_tokens > self.n_ctx:
            raise ContextOverflowError(
                f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceed the context of {self.n_ctx}; "
                "shorten the prompt, lower max_tokens or raise n_ctx")
        with self._lock:
            if self._busy:
                raise FinLLMEdgeError("this OnnxEngine is already generating; use one engine per thread")
            self._busy = True
        self._cancel.clear()
        stream = OnnxStream(self, iter(()), t)
        stream._gen = self._run(ids, max_tokens, search, stops, ignore_eos, t, stream.tokens, stream._state)
        return stream

    def _search_options(self, n_prompt, max_tokens, search, ignore_eos) -> dict:
        opts: dict = {"max_length": n_prompt + max_tokens, "batch_size": 1}
        if ignore_eos:
            opts["min_length"] = n_prompt + max_tokens
        if search["temperature"] and search["temperature"] > 0:
            seed = self.seed if search["seed"] is None else search["seed"]
            opts.update(do_sample=True, temperature=float(search["temperature"]), top_k=int(search["top_k"]),
                        top_p=float(search["top_p"]), random_seed=int(seed))
        else:
            opts["do_sample"] = False
        return opts

    def _tokens(self, ids, max_tokens, search, ignore_eos, t: RunTimings, state: dict) -> Iterator[int]:
        """Prefill, then yield sampled token ids; records the timings in `t`."""
        og = _og()
        model, tokenizer = self._require()
        params = og.GeneratorParams(model)
        params.set_search_options(**self._search_options(len(ids), max_tokens, search, ignore_eos))
        gen = og.Generator(model, params)
        t.n_prompt = len(ids)
        t.t_prefill_start = _now()
        gen.append_tokens(ids)
        t.t_prefill_end = _now()
        state["finish"] = "length"
        while t.n_gen < max_tokens:
            if self._cancel.is_set():
                state["finish"] = "cancelled"
                return
            if gen.is_done():
                state["finish"] = "eos"
                return
            t0 = _now()
            gen.generate_next_token()
            token = int(gen.get_next_tokens()[0])
            now = _now()
            if t.n_gen == 0:
                t.t_first_token = now
            else:
                t.token_ms.append((now - t0) * 1e3)
            t.n_gen += 1
            if token in self._eos and not ignore_eos:
                state["finish"] = "eos"
                return
            yield token

    def _run(self, ids, max_tokens, search, stops, ignore_eos, t: RunTimings, tokens: list[int],
             state: dict) -> Iterator[str]:
        state["finish"] = "cancelled"
        hold = max((len(s) for s in stops), default=0)
        try:
            decoder = self._require()[1].create_stream()
            pending = ""
            for token in self._tokens(ids, max_tokens, search, ignore_eos, t, state):
                tokens.append(token)
                pending += decoder.decode(token)
                cut = min((i for i in (pending.find(s) for s in stops) if i >= 0), default=-1)
                if cut >= 0:
                    state["finish"] = "stop"
                    if pending[:cut]:
                        yield pending[:cut]
                    pending = ""
                    break
                safe = len(pending) - (hold - 1) if hold else len(pending)
                if safe > 0:
                    yield pending[:safe]
                    pending = pending[safe:]
            if pending and state["finish"] != "cancelled":
                yield pending
        finally:  # normal end, error, or the caller broke out (GeneratorExit)
            t.t_end = _now()
            state["ended"] = state["finish"]
            self._finish([t])

    def _finish(self, runs: list[RunTimings], warmup: int = 0, thermal: dict | None = None) -> None:
        if runs and runs[-1].n_gen:
            self._last_runs, self._last_warmup, self._last_thermal = runs, warmup, thermal
            self._last_profile = None
        with self._lock:
            self._busy = False

    # profiles ------------------------------------------------------------------------------
    def _profile_for(self, runs: list[RunTimings], warmup: int = 0, thermal: dict | None = None) -> dict:
        if thermal is None:
            after = thermal_snapshot()
            thermal = {"after": after} if after else None
        profile = build_profile(runs, model=self.model_info, device=self._device, n_threads=self.n_threads,
                                n_ctx=self.n_ctx, load_ms=self.load_ms, warmup=warmup, thermal=thermal,
                                llama_cpp_version=f"n/a (onnxruntime-genai {self._og_version})")
        profile["tool"] = TOOL
        return profile

    @property
    def last_profile(self) -> dict | None:
        """LatencyProfile of the last finished generation or benchmark (None before the first)."""
        if not self._last_runs:
            return None
        if self._last_profile is None:
            self._last_profile = self._profile_for(self._last_runs, self._last_warmup, self._last_thermal)
        return self._last_profile

    def benchmark(self, n_prompt: int = 64, n_gen: int = 64, repetitions: int = 3, warmup: int = 1) -> dict:
        """Like Engine.benchmark: warm-ups, then `repetitions` of prefill n_prompt + greedy decode n_gen."""
        from .engine import BENCH_TEXT  # the same finance prompt the GGUF Engine benchmarks with

        if n_prompt < 1 or n_gen < 1 or repetitions < 1 or warmup < 0:
            raise ValueError("n_prompt, n_gen and repetitions must be >= 1 and warmup >= 0")
        if n_prompt + n_gen > self.n_ctx:
            raise ContextOverflowError(f"n_prompt + n_gen = {n_prompt + n_gen} exceeds n_ctx = {self.n_ctx}")
        text = BENCH_TEXT
        while len(self.tokenize(text)) < n_prompt:
            text += BENCH_TEXT
        ids = self.tokenize(text)[:n_prompt]
        before = thermal_snapshot()
        runs: list[RunTimings] = []
        greedy = dict(temperature=0.0, top_k=1, top_p=1.0, seed=None)
        for i in range(warmup + repetitions):
            with self._lock:
                if self._busy:
                    raise FinLLMEdgeError("this OnnxEngine is already generating")
                self._busy = True
            self._cancel.clear()
            t = RunTimings(t_request=_now())
            state: dict = {}
            try:
                for _ in self._tokens(ids, n_gen, greedy, True, t, state):
                    pass
            finally:
                t.t_end = _now()
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
