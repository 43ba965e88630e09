"""OnnxEngine: an int4 ONNX model (onnxruntime-genai) behind the same backend protocol as Engine.

    from finllm_edge.onnx_engine import OnnxEngine
    with OnnxEngine("out/onnx-int4", n_threads=2) as eng:
        stream = eng.generate("What is EBITDA?", max_tokens=64)
        for piece in stream:
            print(piece, end="", flush=True)
        print(stream.profile["decode_tok_s"])        # same as eng.last_profile

Everything a caller sees is finllm_edge.backend's (stream, completions, profiles), and the
rules are the core's: stop strings and UTF-8 (fe_text_stream), chat templates (fe_chat_render),
sampling defaults and checks (fe_sampling_default_params), finish reasons, the LatencyProfile
writer (fe_profile_json). This module only turns onnxruntime-genai's generator into steps.
Where ONNX Runtime differs: no min_p (an explicit min_p > 0 is refused), and the folder's
tokenizer instead of llama.cpp's. onnxruntime_genai is imported lazily.
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
    GenerationOptions,
    RunTimes,
    SamplingOptions,
    Step,
    TokenStream,
    check_max_tokens,
    normalize_stop,
)
from .chat import render_chat_template
from .errors import (
    ContextOverflowError,
    EngineBusyError,
    FinLLMEdgeError,
    InvalidArgumentError,
    ModelNotFoundError,
    TemplateError,
    UnsupportedFeatureError,
)
from .onnx_validate import validate_model_dir

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


class _OnnxSteps:
    """One generation of onnxruntime-genai as steps; text through the core's fe_text_stream."""

    def __init__(self, engine: "OnnxEngine", ids: list[int], gen: GenerationOptions, search: dict) -> None:
        L = _native.lib()
        self._engine, self._ids, self._gen, self._search = engine, ids, gen, search
        self._t = RunTimes(n_prompt=len(ids), token_ms=[])
        self._t_start = _now()
        stops, n, self._keep = _native.stop_array(gen.stop)
        self._ts = L.fe_text_stream_new(C.cast(stops, C.POINTER(C.c_char_p)) if stops is not None else None, n)
        if not self._ts:
            raise L.error(-4, "fe_text_stream_new")
        self._gen_obj = None
        self._decoder = None
        self._t_prev = 0.0
        self._open = True

    def _text(self, fn, *args) -> str:
        out, n = C.c_void_p(), C.c_size_t(0)
        _native.lib().check(fn(self._ts, *args, C.byref(out), C.byref(n)))
        return C.string_at(out, n.value).decode("utf-8") if n.value else ""

    def _finish(self, reason: str, text: str = "", token: int = -1) -> Step:
        if reason != "cancelled":  # the held-back rest (nothing after a stop string: the core knows)
            text += self._text(_native.lib().fe_text_stream_finish)
        self.close()
        return Step(text, token, True, reason)

    def next(self) -> Step:
        eng = self._engine
        if eng._cancel.is_set():
            return self._finish("cancelled")
        if self._gen_obj is None:  # prefill
            og = _og()
            params = og.GeneratorParams(eng._model)
            params.set_search_options(**self._search)
            self._gen_obj = og.Generator(eng._model, params)
            self._decoder = eng._tokenizer.create_stream()
            t0 = _now()
            self._gen_obj.append_tokens(self._ids)
            self._t.prefill_ms = (_now() - t0) * 1e3
            if self._gen.max_tokens == 0:
                return self._finish("length")
        if self._t.n_gen >= self._gen.max_tokens or len(self._ids) + self._t.n_gen >= eng.n_ctx:
            return self._finish("length")
        if self._gen_obj.is_done():
            return self._finish("stop")
        self._gen_obj.generate_next_token()
        token = int(self._gen_obj.get_next_tokens()[0])
        now = _now()
        if self._t.n_gen == 0:
            self._t.ttft_ms = (now - self._t_start) * 1e3
        else:
            self._t.token_ms.append((now - self._t_prev) * 1e3)
        self._t_prev = now
        if token in eng._eos and not self._gen.ignore_eos:
            return self._finish("stop")
        self._t.n_gen += 1
        piece = self._decoder.decode(token).encode("utf-8")
        stopped = C.c_bool(False)
        out, n = C.c_void_p(), C.c_size_t(0)
        L = _native.lib()
        L.check(L.fe_text_stream_push(self._ts, piece, len(piece), C.byref(out), C.byref(n), C.byref(stopped)))
        text = C.string_at(out, n.value).decode("utf-8") if n.value else ""
        if stopped.value:
            return self._finish("stop", text, token)
        return Step(text, token)

    def close(self) -> None:
        if self._open:
            self._open = False
            self._t.e2e_ms = (_now() - self._t_start) * 1e3
            if self._t.n_gen == 0:
                self._t.ttft_ms = self._t.e2e_ms
            _native.lib().fe_text_stream_free(self._ts)
            self._ts = None
            self._gen_obj = None
            self._engine._release()

    def times(self) -> RunTimes:
        return self._t


class OnnxEngine(Backend):
    """A loaded onnxruntime-genai model. See the module docstring."""

    TOOL = "finllm_edge.OnnxEngine"

    def __init__(self, model_dir, n_threads: int | None = None, n_ctx: int = DEFAULT_CTX, seed: int | None = None,
                 *, options: Any = None) -> None:
        super().__init__()
        if options is not None:  # a finllm_edge.engine.EngineOptions
            n_threads, n_ctx, seed = options.n_threads, options.n_ctx, options.seed
        L = _native.lib()
        og = _og()
        self.info = validate_model_dir(model_dir)
        self.model_dir = Path(model_dir)
        self.model_path = self.info.model_path
        if n_threads is None:
            n_threads = int(L.fe_default_n_threads())
        if isinstance(n_threads, bool) or not isinstance(n_threads, int) or not 1 <= n_threads <= L.fe_cpu_count():
            raise InvalidArgumentError(f"n_threads = {n_threads!r} is out of range: use 1..{L.fe_cpu_count()} "
                                       "(the CPUs online)")
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
            raise InvalidArgumentError(f"n_ctx = {n_ctx!r} is out of range: use an integer >= 1")
        self.n_threads = n_threads
        self.n_ctx = int(min(n_ctx, self.info.genai_config["model"].get("context_length", n_ctx)))
        self.seed = seed
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._busy = False
        self._closed = False
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

    def cancel(self) -> None:
        """Stop the running generation after its current token (safe from any thread)."""
        self._cancel.set()

    def _require(self) -> None:
        if self._closed:
            raise FinLLMEdgeError("this OnnxEngine is closed; create a new one")

    def _release(self) -> None:
        with self._lock:
            self._busy = False

    # text ----------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        self._require()
        return [int(t) for t in self._tokenizer.encode(text)]

    def detokenize(self, tokens: Sequence[int]) -> str:
        self._require()
        return self._tokenizer.decode(list(tokens))

    def metadata(self, key: str) -> str | None:
        if key == "tokenizer.chat_template":
            path = self.model_dir / "chat_template.jinja"
            if path.is_file():
                return path.read_text(encoding="utf-8")
            cfg = self.model_dir / "tokenizer_config.json"
            if cfg.is_file():
                return json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        return None

    def _special_token(self, name: str) -> str:
        cfg = self.model_dir / "tokenizer_config.json"
        tok = json.loads(cfg.read_text(encoding="utf-8")).get(name) if cfg.is_file() else None
        if isinstance(tok, dict):
            tok = tok.get("content")
        return tok if isinstance(tok, str) else ""

    def format_chat(self, messages: Iterable[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        """The folder's chat template rendered by the core (fe_chat_render), as for GGUF models."""
        source = self.metadata("tokenizer.chat_template")
        if not source:
            raise TemplateError(f"{self.model_dir} has no chat template; use generate() with a raw prompt")
        return render_chat_template(source, messages, add_generation_prompt=add_generation_prompt,
                                    bos_token=self._special_token("bos_token"),
                                    eos_token=self._special_token("eos_token"))

    def chat(self, messages: Iterable[Mapping[str, Any]], max_tokens: int = 256, **kwargs: Any) -> TokenStream:
        return self.generate(self.format_chat(messages), max_tokens, **kwargs)

    # generation ----------------------------------------------------------------------------
    def generate(self, prompt: str, max_tokens: int = 256, *, stop: Sequence[str] | str | None = None,
                 sampling: SamplingOptions | None = None, ignore_eos: bool = False,
                 temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                 min_p: float | None = None, repeat_penalty: float | None = None, repeat_last_n: int | None = None,
                 seed: int | None = None, add_special: bool = True, parse_special: bool = False,
                 grammar: str | None = None, json_schema: Any = None,
                 response_format: Mapping[str, Any] | None = None) -> TokenStream:
        """Stream the continuation of `prompt` (the same contract as Engine.generate)."""
        if grammar is not None or json_schema is not None or (
                response_format is not None and dict(response_format).get("type") != "text"):
            raise UnsupportedFeatureError(
                "grammar / json_schema / response_format are not supported by the ONNX backend "
                "(onnxruntime-genai has no grammar sampler): use the GGUF model with finllm_edge.Engine")
        self._require()
        gen = GenerationOptions(max_tokens=check_max_tokens(max_tokens), stop=normalize_stop(stop),
                                ignore_eos=bool(ignore_eos))
        s = (sampling or SamplingOptions()).merged(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                                   repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
                                                   seed=seed)
        if s.min_p:
            raise InvalidArgumentError("min_p is not supported by onnxruntime-genai: leave it unset or pass min_p=0")
        p = s.to_c(self.seed)  # the core's defaults and range checks
        ids = self.tokenize(prompt)
        if not ids:
            raise InvalidArgumentError("the prompt has no tokens")
        if len(ids) >= self.n_ctx:
            raise ContextOverflowError(
                f"the prompt has {len(ids)} tokens but the context holds n_ctx = {self.n_ctx} (and the answer needs "
                "room too); shorten the prompt or raise n_ctx")
        search: dict = {"max_length": min(self.n_ctx, len(ids) + max(gen.max_tokens, 1)), "batch_size": 1}
        if gen.ignore_eos:
            search["min_length"] = search["max_length"]
        if p.repeat_penalty != 1.0:
            search["repetition_penalty"] = float(p.repeat_penalty)
        if p.temperature > 0:
            seed_v = p.seed if p.seed != _native.FE_SEED_RANDOM else int.from_bytes(os.urandom(4), "little") >> 1
            search.update(do_sample=True, temperature=float(p.temperature), top_k=int(p.top_k),
                          top_p=float(p.top_p), random_seed=int(seed_v) & 0x7FFFFFFF)
        else:
            search["do_sample"] = False
        with self._lock:
            if self._busy:
                raise EngineBusyError("this OnnxEngine is already generating (one generation at a time): finish, "
                                      "close or cancel() the open stream first")
            self._busy = True
        self._cancel.clear()
        try:
            steps = _OnnxSteps(self, ids, gen, search)
        except BaseException:
            self._release()
            raise
        return TokenStream(self, steps)

    # profiles ------------------------------------------------------------------------------
    def _profile_meta(self, meta: _native.ProfileMeta) -> None:
        self._meta_keep = [os.fsencode(self.info.model_path), f"onnx-{self.info.precision}".encode(),
                           f"n/a (onnxruntime-genai {self._og_version})".encode(), b""]
        meta.model_path, meta.model_type, meta.runtime_version, meta.variant = self._meta_keep
        meta.model_size_bytes = int(self.info.size_bytes)
        meta.bits_per_weight = float(self.info.bits_per_weight)
        meta.load_ms = float(self.load_ms)

    def benchmark(self, n_prompt: int = 64, n_gen: int = 64, repetitions: int = 3, warmup: int = 1) -> dict:
        """Like Engine.benchmark (the core's benchmark prompt): warm-ups, then `repetitions` of prefill
        n_prompt + greedy decode n_gen."""
        if min(n_prompt, n_gen, repetitions) < 1 or warmup < 0:
            raise InvalidArgumentError("n_prompt, n_gen and repetitions must be >= 1 and warmup >= 0")
        if n_prompt + n_gen > self.n_ctx:
            raise ContextOverflowError(f"n_prompt + n_gen = {n_prompt + n_gen} exceeds n_ctx = {self.n_ctx}")
        L = _native.lib()
        text = L.fe_bench_text().decode()
        ids = self.tokenize(text)
        while len(ids) < n_prompt:
            ids += ids
        prompt_ids = ids[:n_prompt]
        before = L.take_string(L.fe_thermal_json(), "fe_thermal_json")
        runs: list[RunTimes] = []
        for i in range(warmup + repetitions):
            gen = GenerationOptions(max_tokens=n_gen, ignore_eos=True)
            search = {"max_length": n_prompt + n_gen, "min_length": n_prompt + n_gen, "batch_size": 1,
                      "do_sample": False}
            with self._lock:
                if self._busy:
                    raise EngineBusyError("this OnnxEngine is already generating")
                self._busy = True
            self._cancel.clear()
            steps = _OnnxSteps(self, prompt_ids, gen, search)
            try:
                while not steps.next().done:
                    pass
            finally:
                steps.close()
            if i >= warmup:
                runs.append(steps.times())
        return self._set_benchmark(runs, warmup, before)
