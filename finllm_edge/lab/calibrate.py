"""Host calibration of the latency model: short micro-benchmarks of llama.cpp's own CPU kernels.

`fe-kernel-bench` (kernel_bench.c, built here from the pinned llama.cpp's static ggml libraries)
times, per weight type and thread count:

* decode rate R_dram(type, T): bytes/s of matrix-vector products over ~256 MiB of weights (more
  than the last-level cache, so streamed from DRAM, as a model's weights are per token);
* cache rate R_cache(type, T): the same over ~2 MiB (cache-resident): the kernel's own ceiling.
  R_cache / R_dram > 1.3 means decode of that type is memory-bandwidth-bound, else compute-bound;
* prefill rate G(type, T): ops/s of a 64-column matrix-matrix product over ~64 MiB of weights
  (a prompt micro-batch; weights streamed once per micro-batch, as in a model);
* per-shape rates: the decode and prefill rates again for the weight shapes of the model being
  estimated (`calibrate_shapes`): a kernel's rate depends on the matrix shape (on this host at 2
  threads, Q8_0 matrix-vector products with 576-long rows stream at ~28 GB/s, 1024-long at ~37);
* node cost c_node(T): seconds per op of a real llama.cpp graph (graph_calibration.py: llama-bench
  on a tiny 30-layer model), for decode and for a prefill micro-batch; a chain of tiny ops
  (`node_chain_s`, the executor's hand-off alone) is kept for reference and is the fallback when the
  graph cannot be measured (no `gguf` package or no llama-bench in the build).

Weights go where llama.cpp puts them (Q4_0 and Q4_K repacked at load). Each figure is the best
of REPS timings (background load only slows a run down) and its median (the range's other end).
A full calibration of 6 types x 2 thread counts takes ~20-40 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finllm_edge.paths import cache_dir

SOURCE = Path(__file__).with_name("kernel_bench.c")
DECODE_MIB, CACHE_MIB, PREFILL_MIB, PREFILL_COLS = 256.0, 2.0, 64.0, 64
NODE_CHAIN = 2000


def llama_prefix(variant: str = "host-avx512") -> Path:
    found = sorted(cache_dir().glob(f"llama/{variant}-[0-9a-f]*/prefix"))
    found = [p for p in found if (p / "lib" / "libggml-cpu.a").exists()]
    if not found:
        raise FileNotFoundError(f"no {variant} llama.cpp build in {cache_dir() / 'llama'}; "
                                "run: finllm-edge native build")
    return found[0]


def kernel_bench(variant: str = "host-avx512") -> Path:
    """Build (once, cached by source + library hash) and return the fe-kernel-bench binary."""
    prefix = llama_prefix(variant)
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(str(prefix).encode())
    h.update(str((prefix / "lib" / "libggml-cpu.a").stat().st_mtime_ns).encode())
    out = cache_dir() / "kernel-bench" / f"{variant}-{h.hexdigest()[:12]}" / "fe-kernel-bench"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    lib = prefix / "lib"
    cmd = [os.environ.get("CC", "cc"), "-O2", f"-I{prefix / 'include'}", str(SOURCE), "-o", str(tmp), f"-L{lib}",
           "-Wl,--start-group", "-lggml-cpu", "-lggml", "-lggml-base", "-Wl,--end-group",
           "-lstdc++", "-fopenmp", "-lpthread", "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    tmp.rename(out)
    return out


def _run(binary: Path, *args) -> dict:
    r = subprocess.run([str(binary), *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


@dataclass
class Rate:
    best: float  # the fastest repetition (bytes/s or ops/s or s/node: see the field)
    median: float


@dataclass
class HostCalibration:
    """Measured rates of this host, per weight type name (GGUF names: F16, Q8_0, Q4_0, Q4_K, ...) and threads."""
    variant: str
    cpu: str
    seconds: float = 0.0
    decode_bytes_s: dict[str, dict[int, Rate]] = field(default_factory=dict)  # R_dram
    cache_bytes_s: dict[str, dict[int, Rate]] = field(default_factory=dict)  # R_cache
    prefill_ops_s: dict[str, dict[int, Rate]] = field(default_factory=dict)  # G
    # per weight shape, keyed estimate.shape_key(type, K, M): R_dram and G of the model's own matrices
    shape_decode_bytes_s: dict[str, dict[int, Rate]] = field(default_factory=dict)
    shape_prefill_ops_s: dict[str, dict[int, Rate]] = field(default_factory=dict)
    node_s: dict[int, Rate] = field(default_factory=dict)  # c_node of decode (s per op: best = smallest)
    node_prefill_s: dict[int, Rate] = field(default_factory=dict)  # c_pp: per op of a prefill micro-batch
    node_chain_s: dict[int, Rate] = field(default_factory=dict)  # per node of a chain of tiny ops
    graph: dict = field(default_factory=dict)  # where c_node came from (graph_calibration) or why not
    repacked: dict[str, bool] = field(default_factory=dict)
    loadavg: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HostCalibration":
        def rates(m):
            return {t: {int(k): Rate(**v) for k, v in per.items()} for t, per in m.items()}

        return cls(variant=d["variant"], cpu=d["cpu"], seconds=d.get("seconds", 0.0),
                   decode_bytes_s=rates(d["decode_bytes_s"]), cache_bytes_s=rates(d["cache_bytes_s"]),
                   prefill_ops_s=rates(d["prefill_ops_s"]),
                   shape_decode_bytes_s=rates(d.get("shape_decode_bytes_s", {})),
                   shape_prefill_ops_s=rates(d.get("shape_prefill_ops_s", {})),
                   node_s={int(k): Rate(**v) for k, v in d["node_s"].items()},
                   node_prefill_s={int(k): Rate(**v) for k, v in d.get("node_prefill_s", {}).items()},
                   node_chain_s={int(k): Rate(**v) for k, v in d.get("node_chain_s", {}).items()},
                   graph=d.get("graph", {}),
                   repacked=d.get("repacked", {}), loadavg=d.get("loadavg", []))

    def merge_best(self, other: "HostCalibration") -> None:
        """Keep, per figure, the best of both (repeated calibration rounds on a shared machine)."""
        for mine, theirs in ((self.decode_bytes_s, other.decode_bytes_s), (self.cache_bytes_s, other.cache_bytes_s),
                             (self.prefill_ops_s, other.prefill_ops_s),
                             (self.shape_decode_bytes_s, other.shape_decode_bytes_s),
                             (self.shape_prefill_ops_s, other.shape_prefill_ops_s)):
            for t, per in theirs.items():
                for n, r in per.items():
                    cur = mine.setdefault(t, {}).get(n)
                    mine[t][n] = r if cur is None else Rate(max(cur.best, r.best), max(cur.median, r.median))
        for mine, theirs in ((self.node_s, other.node_s), (self.node_prefill_s, other.node_prefill_s),
                             (self.node_chain_s, other.node_chain_s)):
            for n, r in theirs.items():
                cur = mine.get(n)
                mine[n] = r if cur is None else Rate(min(cur.best, r.best), min(cur.median, r.median))
        self.seconds += other.seconds


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def calibrate_host(types: list[str], threads: list[int], reps: int = 5,
                   variant: str = "host-avx512") -> HostCalibration:
    import time

    binary = kernel_bench(variant)
    cal = HostCalibration(variant=variant, cpu=_cpu_model(), loadavg=_loadavg())
    t0 = time.perf_counter()
    for t in threads:
        node = _run(binary, "nodes", t, NODE_CHAIN, reps)["seconds"]
        cal.node_chain_s[t] = Rate(min(node) / NODE_CHAIN, statistics.median(node) / NODE_CHAIN)
        for ty in types:
            for target, mib, cols in ((cal.decode_bytes_s, DECODE_MIB, 1), (cal.cache_bytes_s, CACHE_MIB, 1),
                                      (cal.prefill_ops_s, PREFILL_MIB, PREFILL_COLS)):
                r = _run(binary, "mul_mat", ty, t, cols, mib, reps)
                work = r["weight_bytes"] if cols == 1 else r["ops"]
                # per-node executor cost is part of the measured time, as it is in a model
                target.setdefault(ty, {})[t] = Rate(work / min(r["seconds"]), work / statistics.median(r["seconds"]))
                cal.repacked[ty] = bool(r["repacked"])
    graph_per_op(cal, threads, reps, variant)
    cal.seconds = time.perf_counter() - t0
    return cal


def calibrate_shapes(cal: HostCalibration, shapes: list[str], threads: list[int], reps: int = 5) -> None:
    """Decode and prefill rates of each weight shape (estimate.shape_key) into `cal`, ~0.5 s per shape
    and thread count. The per-type rates stay for shapes not measured."""
    import time

    from finllm_edge.lab.estimate import parse_shape_key

    binary = kernel_bench(cal.variant)
    t0 = time.perf_counter()
    for t in threads:
        for key in shapes:
            ty, k, m = parse_shape_key(key)
            for target, mib, cols in ((cal.shape_decode_bytes_s, DECODE_MIB, 1),
                                      (cal.shape_prefill_ops_s, PREFILL_MIB, PREFILL_COLS)):
                r = _run(binary, "mul_mat", ty, t, cols, mib, reps, k, m)
                work = r["weight_bytes"] if cols == 1 else r["ops"]
                target.setdefault(key, {})[t] = Rate(work / min(r["seconds"]), work / statistics.median(r["seconds"]))
    cal.seconds += time.perf_counter() - t0


def graph_per_op(cal: HostCalibration, threads: list[int], reps: int, variant: str) -> None:
    """c_node and c_pp from the tiny real graph (needs the rates above); else the chain's figure, said."""
    from finllm_edge.lab import graph_calibration

    bench = llama_prefix(variant) / "bin" / "llama-bench"
    try:
        if not bench.exists():
            raise FileNotFoundError(f"{bench} not found (finllm-edge native build)")
        g = graph_calibration.per_op_costs(cal, bench, cache_dir() / "kernel-bench", threads, reps)
    except (ImportError, OSError, subprocess.CalledProcessError, ValueError, KeyError) as exc:
        cal.node_s = dict(cal.node_chain_s)
        cal.graph = {"source": "chain of tiny ops (the real graph could not be measured)", "error": str(exc)}
        return
    cal.node_s, cal.node_prefill_s = g["decode"], g["prefill"]
    cal.graph = {"source": "llama-bench on a tiny real graph", "model": g["model"], "n_ops": g["n_ops"],
                 "raw_seconds": {str(t): v for t, v in g["raw"].items()}}
