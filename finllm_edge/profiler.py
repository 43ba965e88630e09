"""Timings of generations -> a LatencyProfile dict (schemas/latency_profile.schema.json).

The Engine records a `RunTimings` per generation (a few perf_counter reads per token, nothing
else on the hot path); `build_profile` turns one or more of them into the shared schema, with
provenance (model sha256, llama.cpp version, bits per weight) and the device block.
"""

from __future__ import annotations

import datetime
import os
import resource
import statistics
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .profile import SCHEMA_VERSION, percentile, validate_profile

TOOL = "finllm_edge.Engine"


@dataclass
class RunTimings:
    """perf_counter() stamps (seconds) of one generation."""

    t_request: float = 0.0
    t_prefill_start: float = 0.0
    t_prefill_end: float = 0.0
    t_first_token: float = 0.0
    t_end: float = 0.0
    n_prompt: int = 0
    n_gen: int = 0  # tokens sampled, EOS included
    # Latency of each token after the first (decode + sample, inside the engine; the time the
    # caller spends between tokens is not counted). The first token's latency is the TTFT.
    token_ms: list[float] = field(default_factory=list)

    @property
    def prefill_ms(self) -> float:
        return (self.t_prefill_end - self.t_prefill_start) * 1e3

    @property
    def ttft_ms(self) -> float:
        return ((self.t_first_token or self.t_end) - self.t_request) * 1e3

    @property
    def e2e_ms(self) -> float:
        return (self.t_end - self.t_request) * 1e3

    @property
    def prefill_tok_s(self) -> float:
        ms = self.prefill_ms
        return self.n_prompt / ms * 1e3 if ms > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        lat = self.token_ms
        total = sum(lat)
        return len(lat) / total * 1e3 if total > 0 else 0.0


@dataclass(frozen=True)
class ModelInfo:
    """Provenance of the model a profile was measured on."""

    path: str
    size_bytes: int  # file size
    model_type: str  # llama_model_desc
    bits_per_weight: float  # 8 * tensor bytes / n_params


_sha_cache: dict[tuple[str, int, int], str] = {}
_sha_lock = threading.Lock()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, cached per (path, size, mtime) for the life of the process."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    with _sha_lock:
        if key in _sha_cache:
            return _sha_cache[key]
    from .hashing import sha256_file

    digest = sha256_file(p)
    with _sha_lock:
        _sha_cache[key] = digest
    return digest


def peak_rss_mb() -> float:
    """Peak resident set size of this process: VmHWM, else getrusage (kB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (2**20 if sys.platform == "darwin" else 1024.0), 1)


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


def build_profile(runs: list[RunTimings], *, model: ModelInfo, device: dict, n_threads: int, n_ctx: int,
                  load_ms: float, warmup: int = 0, thermal: dict | None = None,
                  llama_cpp_version: str | None = None, variant: str | None = None) -> dict:
    """A schema-valid LatencyProfile from one or more repetitions of the same workload."""
    if not runs:
        raise ValueError("build_profile needs at least one run")
    if llama_cpp_version is None:
        from .native.fetch import llama_version_string

        llama_cpp_version = llama_version_string()
    last = runs[-1]
    prefill = [r.prefill_tok_s for r in runs]
    decode = [r.decode_tok_s for r in runs]
    all_tokens = [ms for r in runs for ms in r.token_ms]
    profile = {
        "schema_version": SCHEMA_VERSION,
        "tool": TOOL,
        "tool_version": __version__,
        "llama_cpp_version": llama_cpp_version,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_path": model.path,
        "model_sha256": file_sha256(model.path),
        "model_type": model.model_type,
        "model_size_bytes": int(model.size_bytes),
        "bits_per_weight": round(float(model.bits_per_weight), 4),
        "device": device,
        "variant": variant,
        "emulated": False,
        "n_threads": int(n_threads),
        "n_ctx": int(n_ctx),
        "n_prompt": int(last.n_prompt),
        "n_gen": int(last.n_gen),
        "repetitions": len(runs),
        "warmup": int(warmup),
        "load_ms": round(float(load_ms), 3),
        "ttft_ms": round(_median([r.ttft_ms for r in runs]), 3),
        "prefill_tok_s": round(_median(prefill), 3),
        "prefill_tok_s_min": round(min(prefill), 3),
        "prefill_tok_s_max": round(max(prefill), 3),
        "decode_tok_s": round(_median(decode), 3),
        "decode_tok_s_min": round(min(decode), 3),
        "decode_tok_s_max": round(max(decode), 3),
        "token_ms_p50": round(percentile(all_tokens, 50), 3),
        "token_ms_p90": round(percentile(all_tokens, 90), 3),
        "token_ms_p99": round(percentile(all_tokens, 99), 3),
        "token_ms": [round(x, 3) for x in last.token_ms],
        "e2e_ms": round(_median([r.e2e_ms for r in runs]), 3),
        "peak_rss_mb": peak_rss_mb(),
        "thermal": thermal,
    }
    return validate_profile(profile)


def one_line(p: dict) -> str:
    """The one-line summary `finllm-edge run` prints after the answer."""
    tag = " [EMULATED]" if p.get("emulated") else ""
    return (f"[profile{tag}] load {p['load_ms']:.0f} ms | TTFT {p['ttft_ms']:.1f} ms | "
            f"prefill {p['prefill_tok_s']:.1f} tok/s ({p['n_prompt']} tok) | "
            f"decode {p['decode_tok_s']:.1f} tok/s ({p['n_gen']} tok) | "
            f"p50/p90/p99 {p['token_ms_p50']:.1f}/{p['token_ms_p90']:.1f}/{p['token_ms_p99']:.1f} ms | "
            f"e2e {p['e2e_ms']:.0f} ms | peak RSS {p['peak_rss_mb']:.0f} MB | "
            f"{p['n_threads']} threads | {p['model_type']} {p['bits_per_weight']:.2f} bpw")
