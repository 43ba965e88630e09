"""Latency ESTIMATE of a GGUF on a described device: prefill, decode and TTFT as ranges, never a measurement.

The model and its calibration are in finllm_edge.lab.latency_model (equations) and
finllm_edge.lab.calibrate (host micro-benchmarks of llama.cpp's kernels); the ARM constants are
fitted on published llama.cpp measurements (devices/published_arm.json), and every estimate carries
the model's measured leave-one-out error on them. `benchmarks/bench_estimate.py` measures the
host error against llama-bench.

Devices are JSON files in finllm_edge/lab/devices/ (copy one to describe yours).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

KV_BYTES_PER_VALUE = 2  # llama.cpp's default F16 KV cache
UBATCH = 512


@dataclass(frozen=True)
class Cluster:
    name: str
    core: str
    count: int
    max_freq_ghz: float
    int8_ops_per_cycle: float  # per core, peak, with the dot-product instructions llama.cpp uses


@dataclass(frozen=True)
class DeviceSpec:
    id: str
    name: str
    clusters: tuple[Cluster, ...]
    memory: str
    memory_bandwidth_gbs: float  # theoretical peak (the fraction cores reach is fitted: latency_model.fit_arm)
    default_threads: int
    isa: str = ""
    assumptions: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def cores_by_speed(self) -> list[Cluster]:
        return sorted(self.clusters, key=lambda c: -c.max_freq_ghz * c.int8_ops_per_cycle)

    def peak_int8_gops(self, n_threads: int | None = None) -> float:
        left = n_threads or self.default_threads
        total = 0.0
        for cl in self.cores_by_speed():
            use = min(left, cl.count)
            total += use * cl.max_freq_ghz * cl.int8_ops_per_cycle
            left -= use
            if left <= 0:
                break
        return total

    @classmethod
    def from_dict(cls, d: dict) -> "DeviceSpec":
        clusters = tuple(Cluster(**c) for c in d["clusters"])
        return cls(id=d["id"], name=d["name"], clusters=clusters, memory=d["memory"],
                   memory_bandwidth_gbs=float(d["memory_bandwidth_gbs"]),
                   default_threads=int(d["default_threads"]),
                   isa=d.get("isa", ""), assumptions=tuple(d.get("assumptions", ())),
                   sources=tuple(d.get("sources", ())))


def list_devices() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("finllm_edge.lab").joinpath("devices").iterdir()
                  if p.name.endswith(".json") and p.name != "published_arm.json")


def load_device(name_or_path: str | os.PathLike) -> DeviceSpec:
    """A device by id (snapdragon-865, ...) or from a JSON file of the same format."""
    p = Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        return DeviceSpec.from_dict(json.loads(p.read_text()))
    res = resources.files("finllm_edge.lab").joinpath("devices", f"{name_or_path}.json")
    if not res.is_file():
        raise ValueError(f"unknown device {name_or_path!r}; known: {', '.join(list_devices())} "
                         "(or pass a path to a device JSON file)")
    return DeviceSpec.from_dict(json.loads(res.read_text()))


@dataclass(frozen=True)
class ModelStats:
    path: str
    n_params: int
    matmul_params: int  # weights multiplied per token (output head included, embedding lookup not)
    weight_bytes: int  # all tensors
    decode_weight_bytes: int  # streamed per decoded token
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    tied_embeddings: bool
    bytes_by_type: dict[str, int] = field(default_factory=dict)
    # weight matrices multiplied per token, by GGUF type name; the output head separately (in a
    # prompt llama.cpp computes logits for the last token only)
    matmul_bytes_by_type: dict[str, int] = field(default_factory=dict)
    matmul_params_by_type: dict[str, int] = field(default_factory=dict)
    head_type: str = ""
    head_bytes: int = 0
    head_params: int = 0
    n_embd: int = 0
    n_vocab: int = 0
    # the same matrices by shape, keyed shape_key(type, K, M) (K = row length, M = rows): kernel
    # rates depend on the shape, so the host calibration can measure the model's own shapes
    matmul_bytes_by_shape: dict[str, int] = field(default_factory=dict)
    matmul_params_by_shape: dict[str, int] = field(default_factory=dict)
    head_shape: str = ""

    @property
    def kv_bytes_per_position(self) -> int:
        return 2 * self.n_layer * self.n_head_kv * self.head_dim * KV_BYTES_PER_VALUE


def shape_key(ty: str, k: int, m: int) -> str:
    return f"{ty}:{k}x{m}"


def parse_shape_key(key: str) -> tuple[str, int, int]:
    ty, dims = key.split(":")
    k, m = dims.split("x")
    return ty, int(k), int(m)


def _field(reader, key: str, default=None):
    f = reader.get_field(key)
    if f is None:
        return default
    try:
        return f.contents()
    except Exception:
        return default


def model_stats(path: str | os.PathLike) -> ModelStats:
    """Tensor types and sizes of a GGUF (via the `gguf` package's GGUFReader, memory-mapped)."""
    try:
        from gguf import GGUFReader
    except ImportError as exc:  # the runtime does not require gguf; the estimate does
        raise ImportError("the estimate reads GGUF tensor tables with the `gguf` package: pip install gguf") from exc
    r = GGUFReader(str(path))
    arch = _field(r, "general.architecture", "llama")
    n_layer = int(_field(r, f"{arch}.block_count", 0))
    n_embd = int(_field(r, f"{arch}.embedding_length", 0))
    n_head = int(_field(r, f"{arch}.attention.head_count", 1) or 1)
    n_head_kv = int(_field(r, f"{arch}.attention.head_count_kv", n_head) or n_head)
    head_dim = int(_field(r, f"{arch}.attention.key_length", n_embd // max(1, n_head)) or 0)
    names = {t.name for t in r.tensors}
    tied = "output.weight" not in names
    n_params = weight_bytes = decode_bytes = matmul = 0
    by_type: dict[str, int] = {}
    mm_bytes: dict[str, int] = {}
    mm_params: dict[str, int] = {}
    sh_bytes: dict[str, int] = {}
    sh_params: dict[str, int] = {}
    head = ("", 0, 0)
    head_shape = ""
    n_vocab = int(_field(r, f"{arch}.vocab_size", 0) or 0)
    for t in r.tensors:
        n, b, ty = int(t.n_elements), int(t.n_bytes), t.tensor_type.name
        n_params += n
        weight_bytes += b
        key = shape_key(ty, int(t.shape[0]), int(t.shape[1])) if len(t.shape) == 2 else ""
        by_type[ty] = by_type.get(ty, 0) + b
        if t.name == "token_embd.weight":
            rows = int(t.shape[-1]) if len(t.shape) > 1 else 1
            n_vocab = n_vocab or rows
            decode_bytes += b if tied else b // max(1, rows)
            matmul += n if tied else 0
            if tied:
                head, head_shape = (ty, b, n), key
        else:
            decode_bytes += b
            if len(t.shape) > 1:
                matmul += n
                if t.name == "output.weight":
                    head, head_shape = (ty, b, n), key
                else:
                    mm_bytes[ty] = mm_bytes.get(ty, 0) + b
                    mm_params[ty] = mm_params.get(ty, 0) + n
                    if key:
                        sh_bytes[key] = sh_bytes.get(key, 0) + b
                        sh_params[key] = sh_params.get(key, 0) + n
    return ModelStats(path=str(path), n_params=n_params, matmul_params=matmul, weight_bytes=weight_bytes,
                      decode_weight_bytes=decode_bytes, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
                      head_dim=head_dim, tied_embeddings=tied, bytes_by_type=by_type,
                      matmul_bytes_by_type=mm_bytes, matmul_params_by_type=mm_params, head_type=head[0],
                      head_bytes=head[1], head_params=head[2], n_embd=n_embd, n_vocab=n_vocab,
                      matmul_bytes_by_shape=sh_bytes, matmul_params_by_shape=sh_params, head_shape=head_shape)


@dataclass(frozen=True)
class Estimate:
    kind: str  # always "estimate"
    device: str
    device_name: str
    model_path: str
    n_threads: int
    n_prompt: int
    n_gen: int
    ttft_ms: float  # middle of the range
    prefill_tok_s: float
    decode_tok_s: float
    decode_bound: str  # "memory bandwidth" | "kernel compute" | "per-op overhead"
    why: str
    ttft_ms_range: tuple[float, float]
    prefill_tok_s_range: tuple[float, float]
    decode_tok_s_range: tuple[float, float]
    e2e_ms_range: tuple[float, float]  # prompt in, n_gen tokens out
    decode_terms_ms: dict
    prefill_terms_ms: dict
    calibration: str
    measured_error: dict  # leave-one-out error of the same model on published ARM measurements
    assumptions: tuple[str, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["assumptions"] = list(self.assumptions)
        return d


def estimate(stats: ModelStats, device: DeviceSpec, n_prompt: int = 64, n_gen: int = 64,
             n_threads: int | None = None, cal=None) -> Estimate:
    """Prefill/decode/TTFT range of a GGUF on an ARM device (finllm_edge.lab.latency_model).

    `cal`: a host calibration (finllm_edge.lab.calibrate), used for the per-type relative kernel
    speeds and the per-op cost; without it all types run at the Q4_0 rate."""
    from .latency_model import device_terms, fit_arm, loo_errors

    threads = n_threads or device.default_threads
    fit = fit_arm(cal)
    host_ghz = _host_ghz()
    ends = [device_terms(stats, device, fit, threads, n_prompt, n_gen, cal, host_ghz, end) for end in (0, 1, 2)]
    slow, mid, fast = ends
    rows = loo_errors(cal)
    errs = [abs(r[k]) for r in rows for k in ("error_pp", "error_tg")]
    measured = {"median_abs_error": statistics.median(errs), "worst_abs_error": max(errs), "n": len(errs),
                "within_30pct": sum(e <= 0.30 for e in errs),
                "method": "leave-one-out over published_arm.json (each point predicted by a fit without it)"}

    def e2e(t):
        return (t.prefill_s + n_gen * t.decode_s) * 1e3

    assumptions = (
        f"ESTIMATE (latency model), not a measurement: {device.name}, {threads} threads",
        f"decode = weights / (eta x {device.memory_bandwidth_gbs:.1f} GB/s) + output head + KV + per-op cost; "
        f"eta {fit.eta[0]:.2f}..{fit.eta[2]:.2f} (median {fit.eta[1]:.2f})",
        f"prefill = 2 x params x tokens / (k x relative kernel speed x peak int8 ops of the cores used); "
        f"k {fit.k[0]:.2f}..{fit.k[2]:.2f} of peak (median {fit.k[1]:.2f})",
        f"eta and k {fit.source}; relative kernel speed per type "
        + ("measured on this host where it runs the type and Q4_0 on the same kind of kernel as ARM "
           "(repacked or not), else 1" if cal is not None else "not calibrated (all types at the Q4_0 rate)"),
        "per-op cost = host per-op cost x host/device clock x IPC factor 1..2",
        "sustained clocks (no thermal throttling), no background load",
        *device.assumptions,
    )
    return Estimate(
        kind="estimate", device=device.id, device_name=device.name, model_path=stats.path, n_threads=threads,
        n_prompt=n_prompt, n_gen=n_gen, ttft_ms=mid.prefill_s * 1e3, prefill_tok_s=n_prompt / mid.prefill_s,
        decode_tok_s=1.0 / mid.decode_s, decode_bound=mid.decode_bound, why=mid.why,
        ttft_ms_range=(fast.prefill_s * 1e3, slow.prefill_s * 1e3),
        prefill_tok_s_range=(n_prompt / slow.prefill_s, n_prompt / fast.prefill_s),
        decode_tok_s_range=(1.0 / slow.decode_s, 1.0 / fast.decode_s),
        e2e_ms_range=(e2e(fast), e2e(slow)),
        decode_terms_ms={k: v * 1e3 for k, v in mid.decode.items()},
        prefill_terms_ms={k: v * 1e3 for k, v in mid.prefill.items()},
        calibration=fit.source + ("; per-type kernel speeds and per-op cost from this host's micro-benchmarks"
                                  if cal is not None else ""),
        measured_error=measured, assumptions=assumptions)


def _host_ghz() -> float:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000.0
    except (OSError, ValueError):
        pass
    return 0.0
