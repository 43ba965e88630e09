"""Roofline estimate of TTFT and decode tok/s of a GGUF on a described device.

An ESTIMATE, never a measurement. The model, with its assumptions stated in every result:

* decode (one token): every weight tensor is streamed from DRAM once (the token embedding
  only one row, unless it doubles as the output head), plus the KV cache up to the current
  position; ops = 2 x (weights used in matmuls) + attention. time = max(bytes / usable
  bandwidth, ops / usable int8 throughput): decode of small batches is bandwidth-bound.
* prefill (n_prompt tokens, the TTFT): ops = n_prompt x 2 x matmul weights + attention; the
  weights are read once per micro-batch. time = max(ops / throughput, bytes / bandwidth).
* usable bandwidth = theoretical x `bandwidth_efficiency`; usable throughput = sum over the
  cores used of (max GHz x int8 ops/cycle) x `compute_efficiency`. Per-token framework
  overhead (graph building, thread synchronisation) is NOT modelled, so small models are
  estimated optimistically; `benchmarks/bench_estimate.py` measures how much on this host.

Devices are JSON files in finllm_edge/lab/devices/ (copy one to describe yours).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
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
    memory_bandwidth_gbs: float  # theoretical peak
    bandwidth_efficiency: float  # fraction of it the CPU cores reach when streaming weights
    compute_efficiency: float  # fraction of peak int8 ops llama.cpp's quantized matmuls reach
    default_threads: int
    isa: str = ""
    assumptions: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    @property
    def usable_bandwidth_gbs(self) -> float:
        return self.memory_bandwidth_gbs * self.bandwidth_efficiency

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

    def usable_gops(self, n_threads: int | None = None) -> float:
        return self.peak_int8_gops(n_threads) * self.compute_efficiency

    @classmethod
    def from_dict(cls, d: dict) -> "DeviceSpec":
        clusters = tuple(Cluster(**c) for c in d["clusters"])
        return cls(id=d["id"], name=d["name"], clusters=clusters, memory=d["memory"],
                   memory_bandwidth_gbs=float(d["memory_bandwidth_gbs"]),
                   bandwidth_efficiency=float(d["bandwidth_efficiency"]),
                   compute_efficiency=float(d["compute_efficiency"]), default_threads=int(d["default_threads"]),
                   isa=d.get("isa", ""), assumptions=tuple(d.get("assumptions", ())),
                   sources=tuple(d.get("sources", ())))


def list_devices() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("finllm_edge.lab").joinpath("devices").iterdir()
                  if p.name.endswith(".json"))


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

    @property
    def kv_bytes_per_position(self) -> int:
        return 2 * self.n_layer * self.n_head_kv * self.head_dim * KV_BYTES_PER_VALUE


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
    for t in r.tensors:
        n, b = int(t.n_elements), int(t.n_bytes)
        n_params += n
        weight_bytes += b
        by_type[t.tensor_type.name] = by_type.get(t.tensor_type.name, 0) + b
        if t.name == "token_embd.weight":
            rows = int(t.shape[-1]) if len(t.shape) > 1 else 1
            decode_bytes += b if tied else b // max(1, rows)
            matmul += n if tied else 0
        else:
            decode_bytes += b
            if len(t.shape) > 1:
                matmul += n
    return ModelStats(path=str(path), n_params=n_params, matmul_params=matmul, weight_bytes=weight_bytes,
                      decode_weight_bytes=decode_bytes, n_layer=n_layer, n_head=n_head, n_head_kv=n_head_kv,
                      head_dim=head_dim, tied_embeddings=tied, bytes_by_type=by_type)


@dataclass(frozen=True)
class Estimate:
    kind: str  # always "estimate"
    device: str
    device_name: str
    model_path: str
    n_threads: int
    n_prompt: int
    n_gen: int
    ttft_ms: float
    prefill_tok_s: float
    decode_tok_s: float
    decode_bound: str  # "memory" or "compute"
    decode_bytes_per_token: float
    decode_ops_per_token: float
    usable_bandwidth_gbs: float
    usable_gops: float
    assumptions: tuple[str, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["assumptions"] = list(self.assumptions)
        return d


def estimate(stats: ModelStats, device: DeviceSpec, n_prompt: int = 64, n_gen: int = 64,
             n_threads: int | None = None) -> Estimate:
    threads = n_threads or device.default_threads
    bw = device.usable_bandwidth_gbs * 1e9
    ops_s = device.usable_gops(threads) * 1e9
    attn_per_pos = 4 * stats.n_layer * stats.n_head * stats.head_dim  # QK^T and PV, 2 ops per MAC
    # decode: average over the generated positions n_prompt .. n_prompt + n_gen
    mid = n_prompt + n_gen / 2.0
    d_bytes = stats.decode_weight_bytes + stats.kv_bytes_per_position * mid
    d_ops = 2.0 * stats.matmul_params + attn_per_pos * mid
    t_mem, t_cmp = d_bytes / bw, d_ops / ops_s
    decode_s = max(t_mem, t_cmp)
    # prefill: weights once per micro-batch, ops for every prompt token (causal attention ~ n^2/2)
    p_bytes = stats.weight_bytes * math.ceil(n_prompt / UBATCH)
    p_ops = n_prompt * 2.0 * stats.matmul_params + attn_per_pos * n_prompt * n_prompt / 2.0
    prefill_s = max(p_bytes / bw, p_ops / ops_s)
    assumptions = (
        f"ESTIMATE (roofline), not a measurement: {device.name}, {threads} threads",
        f"usable bandwidth {device.usable_bandwidth_gbs:.1f} GB/s = {device.memory_bandwidth_gbs:.1f} GB/s "
        f"({device.memory}) x {device.bandwidth_efficiency:.2f}",
        f"usable int8 throughput {device.usable_gops(threads):.0f} GOPS = peak {device.peak_int8_gops(threads):.0f} "
        f"x {device.compute_efficiency:.2f}",
        f"decode reads {d_bytes / 1e6:.1f} MB/token (weights {stats.decode_weight_bytes / 1e6:.1f} MB"
        f"{', tied embedding read as output head' if stats.tied_embeddings else ''} + F16 KV cache)",
        f"ops/token {d_ops / 1e9:.3f} GOP (2 x {stats.matmul_params / 1e6:.1f}M matmul weights + attention)",
        "per-token framework overhead, thermal throttling and background load are not modelled",
        *device.assumptions,
    )
    return Estimate(kind="estimate", device=device.id, device_name=device.name, model_path=stats.path,
                    n_threads=threads, n_prompt=n_prompt, n_gen=n_gen, ttft_ms=prefill_s * 1e3,
                    prefill_tok_s=n_prompt / prefill_s, decode_tok_s=1.0 / decode_s,
                    decode_bound="memory" if t_mem >= t_cmp else "compute",
                    decode_bytes_per_token=d_bytes, decode_ops_per_token=d_ops,
                    usable_bandwidth_gbs=device.usable_bandwidth_gbs, usable_gops=device.usable_gops(threads),
                    assumptions=assumptions)


# host calibration ------------------------------------------------------------------------

def measure_bandwidth_gbs(n_threads: int = 1, mb_per_thread: int = 128, reps: int = 5) -> float:
    """Copy bandwidth (read + write bytes / s) of numpy copies, one array pair per thread, best of reps."""
    import numpy as np

    n = mb_per_thread * 2**20 // 8
    srcs = [np.ones(n, dtype=np.float64) for _ in range(n_threads)]
    dsts = [np.empty_like(s) for s in srcs]
    best = float("inf")
    for _ in range(reps):
        barrier = threading.Barrier(n_threads + 1)

        def work(i: int, barrier: threading.Barrier) -> None:
            barrier.wait()
            np.copyto(dsts[i], srcs[i])
            barrier.wait()

        ts = [threading.Thread(target=work, args=(i, barrier)) for i in range(n_threads)]
        for t in ts:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        barrier.wait()
        best = min(best, time.perf_counter() - t0)
        for t in ts:
            t.join()
    return 2 * n * 8 * n_threads / best / 1e9


def measure_matmul_gops(size: int = 1024, reps: int = 5) -> float:
    """float32 GEMM throughput of numpy's BLAS (2 n^3 ops / s), best of reps, BLAS's own threads."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best / 1e9


def host_device(n_threads: int, bandwidth_gbs: float, gops: float, cpu: str = "this host") -> DeviceSpec:
    """This machine described by measured figures (efficiencies 1: the measurements are attained rates)."""
    per_core = gops / max(1, n_threads)
    return DeviceSpec(
        id="host", name=f"{cpu} (measured)", memory="measured numpy copy",
        clusters=(Cluster(name="host", core=cpu, count=n_threads, max_freq_ghz=1.0, int8_ops_per_cycle=per_core),),
        memory_bandwidth_gbs=bandwidth_gbs, bandwidth_efficiency=1.0, compute_efficiency=1.0,
        default_threads=n_threads,
        assumptions=(f"host bandwidth = numpy copy with {n_threads} threads; host throughput = numpy float32 "
                     "GEMM (BLAS) standing in for llama.cpp's int8 dot-product kernels",))
