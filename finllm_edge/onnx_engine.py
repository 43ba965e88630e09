"""OnnxEngine: the onnxruntime-genai runtime with the GGUF Engine's interface and LatencyProfile.

    from finllm_edge.onnx_engine import OnnxEngine
    with OnnxEngine("out/onnx-int4", n_threads=2) as eng:
        for piece in eng.generate("What is EBITDA?", max_tokens=64):
            print(piece, end="", flush=True)
        print(eng.last_profile["decode_tok_s"])

`generate` streams text pieces; temperature 0 is greedy, otherwise top-k/top-p sampling.
Stop strings end the stream (the stop text itself is not yielded); EOS ends it too.
`cancel()` from another thread stops the running generation after the current token; breaking
out of the iterator stops it as well. One generation at a time per engine (a lock enforces it).
The folder is checked by `onnx_validate.validate_model_dir` before onnxruntime-genai opens it.
onnxruntime_genai is imported lazily, so `import finllm_edge` never needs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from . import __version__
from .errors import ContextOverflowError, FinLLMEdgeError, ModelNotFoundError
from .onnx_validate import validate_model_dir
from .profile import SCHEMA_VERSION, percentile, validate_profile

DEFAULT_CTX = 2048


def _og():
    try:
        import onnxruntime_genai as og
    except ImportError as exc:
        raise ModelNotFoundError(
            "running ONNX models needs onnxruntime-genai: pip install onnxruntime-genai==0.18.0 onnx==1.23.2"
        ) from exc
    return og


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def device_info(cores: list[int]) -> dict:
    """The profile's `device` block from /proc and sysfs (minimal; values missing where unreadable)."""
    cpu_model = platform.processor() or platform.machine()
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.lower().startswith(("model name", "hardware", "cpu model")):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_mb = 0.0
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_mb = int(line.split()[1]) / 1024.0
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    governor, max_freq = {}, {}
    for cpu in affinity:
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/"
        if (g := _read(base + "scaling_governor")) is not None:
            governor[str(cpu)] = g
        if (f := _read(base + "cpuinfo_max_freq")) is not None and f.isdigit():
            max_freq[str(cpu)] = int(f)
    return {"cpu_model": cpu_model, "arch": platform.machine(), "cores_total": os.cpu_count() or 1,
            "cores_used": cores, "affinity": affinity, "governor": governor, "max_freq_khz": max_freq,
            "mem_total_mb": round(mem_mb, 1)}


def _thermal() -> dict | None:
    temps = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        t = _read(str(zone / "temp"))
        if t and t.lstrip("-").isdigit():
            temps[(_read(str(zone / "type")) or zone.name)] = int(t) / 1000.0
    return temps or None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class OnnxEngine:
    def __init__(self, model_dir, n_threads: int | None = None, n_ctx: int = DEFAULT_CTX, seed: int = 0):
        og = _og()
        self.info = validate_model_dir(model_dir)
        self.model_dir = Path(model_dir)
        affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.n_threads = int(n_threads or len(affinity) or os.cpu_count() or 1)
        self.n_ctx = int(min(n_ctx, self.info.genai_config["model"].get("context_length", n_ctx)))
        self.seed = seed
        self._cores = affinity[: self.n_threads]
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self.last_profile: dict | None = None
        t0 = time.perf_counter()
        try:
            config = og.Config(str(self.model_dir))
            config.clear_providers()  # CPU
            config.overlay(json.dumps({"model": {"decoder": {"session_options": {
                "intra_op_num_threads": self.n_threads, "inter_op_num_threads": 1}}}}))
            self._model = og.Model(config)
            self._tokenizer = og.Tokenizer(self._model)
        except Exception as exc:  # the validator passed, so this is a runtime-level refusal
            raise FinLLMEdgeError(f"onnxruntime-genai could not load {self.model_dir}: {exc}") from exc
        self.load_ms = (time.perf_counter() - t0) * 1000.0
        self._model_sha256 = _sha256(self.info.model_path)
        self._og_version = getattr(og, "__version__", "?")

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._cancel.set()
        with self._lock:
            if not self._closed:
                self._tokenizer = None
                self._model = None
                self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def cancel(self) -> None:
        """Stop the running generation after its current token (safe from any thread)."""
        self._cancel.set()

    # -- text ------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        self._check_open()
        return [int(t) for t in self._tokenizer.encode(text)]

    def detokenize(self, tokens) -> str:
        self._check_open()
        return self._tokenizer.decode(list(tokens))

    def _check_open(self) -> None:
        if self._closed:
            raise FinLLMEdgeError("this OnnxEngine is closed; create a new one")

    # -- generation ------------------------------------------------------------------------
    def generate(self, prompt: str, max_tokens: int = 128, temperature: float = 0.0, top_k: int = 40,
                 top_p: float = 0.95, stop: list[str] | None = None, seed: int | None = None) -> Iterator[str]:
        """Stream the answer to `prompt` as text pieces; sets `last_profile` when the stream ends."""
        self._check_open()
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        return self._stream(prompt, max_tokens, temperature, top_k, top_p, list(stop or []),
                            self.seed if seed is None else seed)

    def _stream(self, prompt, max_tokens, temperature, top_k, top_p, stop, seed) -> Iterator[str]:
        og = _og()
        if not self._lock.acquire(blocking=False):
            raise FinLLMEdgeError("this OnnxEngine is already generating; use one engine per thread")
        self._cancel.clear()
        thermal_before = _thermal()
        t_req = time.perf_counter()
        gen = params = None
        token_ms: list[float] = []
        n_gen, ttft_ms, prefill_ms, n_prompt = 0, 0.0, 0.0, 0
        failed = False
        try:
            self._check_open()
            ids = self.tokenize(prompt)
            n_prompt = len(ids)
            if len(ids) + max_tokens > self.n_ctx:
                raise ContextOverflowError(
                    f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceed the context of {self.n_ctx}; "
                    "shorten the prompt, lower max_tokens or raise n_ctx"
                )
            params = og.GeneratorParams(self._model)
            search = {"max_length": len(ids) + max_tokens, "batch_size": 1}
            if temperature and temperature > 0:
                search.update(do_sample=True, temperature=float(temperature), top_k=int(top_k),
                              top_p=float(top_p), random_seed=int(seed))
            else:
                search.update(do_sample=False)
            params.set_search_options(**search)
            gen = og.Generator(self._model, params)
            stream = self._tokenizer.create_stream()
            t_pre = time.perf_counter()
            gen.append_tokens(ids)
            prefill_ms = (time.perf_counter() - t_pre) * 1000.0
            pending = ""
            hold = max((len(s) for s in stop), default=0)
            while not gen.is_done() and n_gen < max_tokens and not self._cancel.is_set():
                t_tok = time.perf_counter()
                gen.generate_next_token()
                token = int(gen.get_next_tokens()[0])
                now = time.perf_counter()
                if n_gen == 0:
                    ttft_ms = (now - t_req) * 1000.0
                else:
                    token_ms.append((now - t_tok) * 1000.0)
                n_gen += 1
                if token in self._eos_ids():
                    break
                pending += stream.decode(token)
                cut = min((i for i in (pending.find(s) for s in stop if s) if i >= 0), default=-1)
                if cut >= 0:
                    if pending[:cut]:
                        yield pending[:cut]
                    pending = ""
                    break
                safe = len(pending) - max(hold - 1, 0) if hold else len(pending)
                if safe > 0:
                    yield pending[:safe]
                    pending = pending[safe:]
            else:
                if pending and not self._cancel.is_set():
                    yield pending
        except GeneratorExit:  # the caller broke out of the loop: a normal, shorter generation
            raise
        except BaseException:
            failed = True
            raise
        finally:
            try:
                del gen, params
                if not failed and n_gen:
                    self.last_profile = self._profile(n_prompt, n_gen, ttft_ms, prefill_ms, token_ms,
                                                      (time.perf_counter() - t_req) * 1000.0, thermal_before)
            finally:
                self._lock.release()

    def _eos_ids(self) -> set[int]:
        eos = self.info.genai_config["model"].get("eos_token_id", [])
        return set(eos if isinstance(eos, list) else [eos])

    # -- profile ---------------------------------------------------------------------------
    def _profile(self, n_prompt, n_gen, ttft_ms, prefill_ms, token_ms, e2e_ms, thermal_before) -> dict:
        prefill = n_prompt / (prefill_ms / 1000.0) if prefill_ms > 0 else 0.0
        decode = len(token_ms) / (sum(token_ms) / 1000.0) if token_ms and sum(token_ms) > 0 else 0.0
        after = _thermal()
        profile = {
            "schema_version": SCHEMA_VERSION, "tool": "finllm_edge.OnnxEngine", "tool_version": __version__,
            "llama_cpp_version": f"n/a (onnxruntime-genai {self._og_version})",
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model_path": str(self.info.model_path), "model_sha256": self._model_sha256,
            "model_type": f"onnx-{self.info.precision}", "model_size_bytes": int(self.info.size_bytes),
            "bits_per_weight": round(float(self.info.bits_per_weight), 4),
            "device": device_info(self._cores), "variant": None, "emulated": False,
            "n_threads": self.n_threads, "n_ctx": self.n_ctx, "n_prompt": int(n_prompt), "n_gen": int(n_gen),
            "repetitions": 1, "warmup": 0, "load_ms": round(self.load_ms, 3), "ttft_ms": round(ttft_ms, 3),
            "prefill_tok_s": prefill, "prefill_tok_s_min": prefill, "prefill_tok_s_max": prefill,
            "decode_tok_s": decode, "decode_tok_s_min": decode, "decode_tok_s_max": decode,
            "token_ms_p50": percentile(token_ms, 50), "token_ms_p90": percentile(token_ms, 90),
            "token_ms_p99": percentile(token_ms, 99), "token_ms": [round(x, 4) for x in token_ms],
            "e2e_ms": round(e2e_ms, 3),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "thermal": {"before": thermal_before, "after": after} if (thermal_before or after) else None,
        }
        return validate_profile(profile)
