"""Latency model: prefill and decode time per token from measured quantities. An ESTIMATE.

Terms (per token; B_t, P_t = bytes and parameters of the weight matrices of GGUF type t, the
output head H apart: in a prompt llama.cpp computes logits for the last token only):

  decode_s  = sum_t B_t / R(t, T)  +  B_H / R(h, T)  +  N_ops * c_node(T)  +  KV_bytes(ctx) / R(F16, T)
  prefill_s = sum_t 2 P_t n / G(t, T)  +  B_H / R(h, T)  +  attn_ops(n) / G(F16, T)  +  ceil(n/512) N_ops c_pp(T)

Host (`host_terms`): R = measured matrix-vector rate over DRAM-sized weights, G = measured 64-column
matrix-matrix rate (finllm_edge.lab.calibrate), per weight shape of the model where measured
(calibrate_shapes), else per type, c_node / c_pp = per-op cost of a decode step / of a
prefill micro-batch measured on a real llama.cpp graph (finllm_edge.lab.graph_calibration: a tiny
30-layer model, its measured time minus its predicted weight terms, over its N_ops), all per type and
thread count. N_ops = non-matmul ops per token = n_layer x OPS_PER_LAYER + 4.

ARM device (`device_terms`), from device figures and published measurements:
  R(t, T)   = eta x theoretical bandwidth    (eta: fraction of the memory bus the cores reach)
  G(t, T)   = k x rel(t) x peak int8 ops/s of the T fastest cores (GHz x int8 ops/cycle, summed)
  c_node    = host c_node(1 thread) x host GHz / fastest core GHz x [1, 2] (IPC range)
where k (the fraction of that int8 peak llama.cpp's kernels reach in a prompt) and eta are fitted
on published llama.cpp figures of A76/A77/A78-class devices (published_arm.json), and rel(t) is
the kernel speed of type t relative to Q4_0 measured on this host where the host and ARM run both
on the same kind of kernel (repacked or not: ARM_REPACKED), else 1. The range comes from the
spread of the fitted k and eta (device) or from best vs median micro-benchmark timings (host).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from importlib import resources

OPS_PER_LAYER = 16  # llama graph: norms, muls, rope x2, KV copies x2, softmax, attention matmuls, adds, act
UBATCH = 512
BITS = {"F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K": 5.5, "Q5_0": 5.5, "Q5_1": 6.0,
        "Q4_K": 4.5, "Q4_K_S": 4.5, "Q4_0": 4.5, "Q4_1": 5.0, "F32": 32.0}


@dataclass
class Terms:
    """Seconds per decoded token / per prompt, split by term; `dominant` names the largest."""
    decode: dict[str, float]
    prefill: dict[str, float]
    decode_bound: str  # "memory bandwidth" | "kernel compute" | "per-op overhead"
    why: str
    notes: list[str] = field(default_factory=list)

    @property
    def decode_s(self) -> float:
        return sum(self.decode.values())

    @property
    def prefill_s(self) -> float:
        return sum(self.prefill.values())


def _attn_ops(stats, n_prompt: int) -> float:
    return 4.0 * stats.n_layer * stats.n_head * stats.head_dim * n_prompt * n_prompt / 2.0


def n_ops(stats) -> int:
    return stats.n_layer * OPS_PER_LAYER + 4


def _rate(table: dict, ty: str, threads: int, which: str, fallback: str = "Q8_0") -> float:
    per = table.get(ty) or table.get(fallback) or next(iter(table.values()))
    r = per.get(threads) or per[max(per)]
    return getattr(r, which)


def _weight_groups(stats) -> list[tuple[str, str, int, int]]:
    """(type, shape key or "", bytes, params) of the matrices multiplied per token (head apart):
    by shape where the GGUF gave shapes, the rest of each type as one group."""
    out, shaped_b, shaped_p = [], {}, {}
    for key, b in getattr(stats, "matmul_bytes_by_shape", {}).items():
        ty = key.split(":")[0]
        p = stats.matmul_params_by_shape[key]
        out.append((ty, key, b, p))
        shaped_b[ty], shaped_p[ty] = shaped_b.get(ty, 0) + b, shaped_p.get(ty, 0) + p
    for ty, b in stats.matmul_bytes_by_type.items():
        rest_b, rest_p = b - shaped_b.get(ty, 0), stats.matmul_params_by_type.get(ty, 0) - shaped_p.get(ty, 0)
        if rest_b > 0:
            out.append((ty, "", rest_b, rest_p))
    return out


def _shape_rate(cal, kind: str, ty: str, shape: str, threads: int, which: str) -> float:
    """kind: 'decode_bytes_s' or 'prefill_ops_s'; the shape's own measured rate, else the type's."""
    per = getattr(cal, "shape_" + kind, {}).get(shape) if shape else None
    if per and threads in per:
        return getattr(per[threads], which)
    return _rate(getattr(cal, kind), ty, threads, which)


def host_terms(stats, cal, threads: int, n_prompt: int, n_gen: int, which: str = "best",
               per_op: bool = True) -> Terms:
    """`which`: 'best' (fastest micro-benchmark repetition) or 'median' (the slow end of the range).
    per_op=False leaves the per-op terms out (graph_calibration derives them from the rest)."""
    ctx = n_prompt + n_gen / 2.0
    node = node_pp = 0.0
    if per_op:
        node = getattr(cal.node_s[threads], which)
        node_pp = getattr((getattr(cal, "node_prefill_s", None) or cal.node_s)[threads], which)
    head = 0.0
    if stats.head_bytes:
        head = stats.head_bytes / _shape_rate(cal, "decode_bytes_s", stats.head_type,
                                              getattr(stats, "head_shape", ""), threads, which)
    w_mem = w_cmp = mm = 0.0
    for ty, shape, b, p in _weight_groups(stats):
        t = b / _shape_rate(cal, "decode_bytes_s", ty, shape, threads, which)
        cache_ratio = _rate(cal.cache_bytes_s, ty, threads, which) / _rate(cal.decode_bytes_s, ty, threads, which)
        if cache_ratio > 1.3:
            w_mem += t
        else:
            w_cmp += t
        mm += 2.0 * p * n_prompt / _shape_rate(cal, "prefill_ops_s", ty, shape, threads, which)
    decode = {"weights, memory-bound types": w_mem, "weights, compute-bound types": w_cmp, "output head": head,
              "per-op overhead": n_ops(stats) * node,
              "KV cache": stats.kv_bytes_per_position * ctx / _rate(cal.decode_bytes_s, "F16", threads, which)}
    prefill = {"matmul compute": mm, "output head (last token)": head,
               "attention": _attn_ops(stats, n_prompt) / _rate(cal.prefill_ops_s, "F16", threads, which),
               "per-op overhead": math.ceil(n_prompt / UBATCH) * n_ops(stats) * node_pp}
    bound, why = _decode_bound(decode)
    return Terms(decode=decode, prefill=prefill, decode_bound=bound, why=why)


def _decode_bound(decode: dict[str, float]) -> tuple[str, str]:
    mem = decode.get("weights, memory-bound types", 0.0) + decode.get("output head", 0.0) + decode.get("KV cache", 0.0)
    cmp_ = decode.get("weights, compute-bound types", 0.0)
    over = decode.get("per-op overhead", 0.0)
    total = mem + cmp_ + over
    top = max(("memory bandwidth", mem), ("kernel compute", cmp_), ("per-op overhead", over), key=lambda kv: kv[1])
    why = {"memory bandwidth": "streaming the weights from DRAM takes {:.0%} of a token: the kernels run faster on "
                               "cache-resident weights than DRAM delivers them",
           "kernel compute": "{:.0%} of a token goes to weight types whose kernels are no faster on cache-resident "
                             "weights: the dot products, not DRAM, set the pace",
           "per-op overhead": "{:.0%} of a token is per-op executor cost, not weights"}[top[0]]
    return top[0], why.format(top[1] / total if total else 0.0)


# ARM devices ------------------------------------------------------------------------------

def published() -> dict:
    return json.loads(resources.files("finllm_edge.lab").joinpath("devices", "published_arm.json").read_text())


def _cores_ghz(clusters: list[dict], threads: int) -> float:
    """Peak int8 Gops/s of the `threads` fastest cores (GHz x int8 ops/cycle, summed)."""
    left, total = threads, 0.0
    for c in sorted(clusters, key=lambda c: -c["max_freq_ghz"] * c["int8_ops_per_cycle"]):
        use = min(left, c["count"])
        total += use * c["max_freq_ghz"] * c["int8_ops_per_cycle"]
        left -= use
        if left <= 0:
            break
    return total


def _quant_type(q: str) -> str:
    q = q.split(" ")[0].upper()
    return {"Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K", "Q8_K_XL": "Q8_0"}.get(q, q)


# Weight types llama.cpp repacks at load on ARM cores with int8 dot-product instructions, by kernel
# generation: the pinned source's ggml-cpu/repack.cpp (ggml_repack_get_optimal_repack_type, dotprod
# or i8mm) repacks these; before runtime repacking (PR #9921, Dec 2024) ARM repacked nothing.
ARM_REPACKED = {"repack": frozenset({"Q4_0", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "IQ4_NL"}),
                "pre-repack": frozenset()}


def relative_kernel_speed(cal, ty: str, kernels: str = "repack") -> float:
    """rel(t): prompt kernel rate of type t / Q4_0's on ARM llama.cpp of that kernel generation.

    Taken from this host (1 thread) only where the host runs both t and Q4_0 on the same kind of
    kernel as ARM does, repacked or not (cal.repacked, measured): a repacked tile kernel against a
    plain dot product is a difference of the host's kernel set, not of the types. Else 1.0: on
    ARM both go through int8 dot products of Q8_0 activations."""
    if cal is None or "Q4_0" not in cal.prefill_ops_s or ty not in cal.prefill_ops_s:
        return 1.0
    arm, host = ARM_REPACKED[kernels], getattr(cal, "repacked", {}) or {}
    if any(t not in host or host[t] != (t in arm) for t in (ty, "Q4_0")):
        return 1.0
    return cal.prefill_ops_s[ty][1].best / cal.prefill_ops_s["Q4_0"][1].best


def _point_inputs(m: dict, devs: dict) -> dict:
    dev = devs[m["device"]]
    threads = m["threads"] or 4
    ty = _quant_type(m["quant"])
    size = m["size_gib"] * 2**30 if m["size_gib"] else m["params_b"] * 1e9 * BITS.get(ty, 8.5) / 8
    return {"bytes": size, "params": m["params_b"] * 1e9, "type": ty, "threads": threads,
            "ghz": _cores_ghz(dev["clusters"], threads), "bw": dev["memory_bandwidth_gbs"] * 1e9}


def fit_points(points: list[dict], devs: dict, cal=None) -> list[dict]:
    """eta and k implied by each published measurement (weights dominate these models' tokens)."""
    out = []
    for m in points:
        x = _point_inputs(m, devs)
        eta = x["bytes"] * m["tg_tok_s"] / x["bw"]
        k = 2 * x["params"] * m["pp_tok_s"] / (relative_kernel_speed(cal, x["type"], m["kernels"]) * x["ghz"] * 1e9)
        out.append({"id": m["id"], "eta": eta, "k": k, "kernels": m["kernels"], **x})
    return out


@dataclass
class ArmFit:
    eta: tuple[float, float, float]  # low, mid, high
    k: tuple[float, float, float]
    n_points: int
    source: str


def fit_arm(cal=None, exclude: str | None = None, kernels: str = "repack") -> ArmFit:
    """eta from every point (the memory bus does not depend on the kernels); k from points whose
    llama.cpp had the same kernel generation (`kernels`), falling back to all points."""
    doc = published()
    pts = [p for p in fit_points(doc["measurements"], doc["devices"], cal) if p["id"] != exclude]
    same = [p for p in pts if p["kernels"] == kernels] or pts
    etas, ks = [p["eta"] for p in pts], [p["k"] for p in same]

    def lmh(v):
        return (min(v), statistics.median(v), max(v))

    return ArmFit(eta=lmh(etas), k=lmh(ks), n_points=len(pts),
                  source=f"fitted on {len(pts)} published llama.cpp ARM measurements (published_arm.json)"
                         + (f", leaving out {exclude}" if exclude else ""))


def device_terms(stats, device, fit: ArmFit, threads: int, n_prompt: int, n_gen: int, cal=None,
                 host_ghz: float = 0.0, end: int = 1) -> Terms:
    """end: 0 = slow end of the range, 1 = middle, 2 = fast end."""
    clusters = [{"count": c.count, "max_freq_ghz": c.max_freq_ghz, "int8_ops_per_cycle": c.int8_ops_per_cycle}
                for c in device.clusters]
    ghz = _cores_ghz(clusters, threads)
    bw = device.memory_bandwidth_gbs * 1e9 * fit.eta[end]
    k = fit.k[end]
    fastest = max(c.max_freq_ghz for c in device.clusters)
    node_host = cal.node_s[1].best if cal is not None and 1 in cal.node_s else 50e-9
    ipc = (2.0, 1.5, 1.0)[end]
    node = node_host * (host_ghz / fastest if host_ghz else 1.5) * ipc
    ctx = n_prompt + n_gen / 2.0
    w = sum(stats.matmul_bytes_by_type.values())
    cmp_dec = sum(2.0 * p / (k * relative_kernel_speed(cal, ty) * ghz * 1e9)
                  for ty, p in stats.matmul_params_by_type.items())
    mem, cmp_ = (w / bw, 0.0) if w / bw >= cmp_dec else (0.0, cmp_dec)
    decode = {"weights, memory-bound types": mem, "weights, compute-bound types": cmp_,
              "output head": stats.head_bytes / bw, "per-op overhead": n_ops(stats) * node,
              "KV cache": stats.kv_bytes_per_position * ctx / bw}
    prefill = {"matmul compute": sum(2.0 * p * n_prompt / (k * relative_kernel_speed(cal, ty) * ghz * 1e9)
                                     for ty, p in stats.matmul_params_by_type.items()),
               "output head (last token)": stats.head_bytes / bw,
               "attention": _attn_ops(stats, n_prompt) / (k * 0.5 * ghz * 1e9),  # F16: half the int8 rate
               "per-op overhead": math.ceil(n_prompt / UBATCH) * n_ops(stats) * node}
    bound, why = _decode_bound(decode)
    return Terms(decode=decode, prefill=prefill, decode_bound=bound, why=why,
                 notes=[f"eta {fit.eta[end]:.2f} of {device.memory_bandwidth_gbs:.1f} GB/s, "
                        f"k {k:.2f} of {ghz:.0f} peak int8 GOPS ({threads} threads)"])


def loo_errors(cal=None) -> list[dict]:
    """Leave-one-out check on the published points: each predicted from a fit without it."""
    doc = published()
    rows = []
    for m in doc["measurements"]:
        x = _point_inputs(m, doc["devices"])
        fit = fit_arm(cal, exclude=m["id"], kernels=m["kernels"])
        tg = fit.eta[1] * x["bw"] / x["bytes"]
        pp = fit.k[1] * relative_kernel_speed(cal, x["type"], m["kernels"]) * x["ghz"] * 1e9 / (2 * x["params"])
        rows.append({"id": m["id"], "device": m["device"], "model": m["model"], "quant": m["quant"],
                     "threads": m["threads"], "assumed": m["assumed_for_estimate"], "url": m["url"],
                     "measured_pp": m["pp_tok_s"], "estimated_pp": pp, "error_pp": pp / m["pp_tok_s"] - 1,
                     "measured_tg": m["tg_tok_s"], "estimated_tg": tg, "error_tg": tg / m["tg_tok_s"] - 1,
                     "kernels": m["kernels"]})
    return rows
