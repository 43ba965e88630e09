"""The latency model's per-op cost, measured on a real llama.cpp graph.

The kernel micro-benchmarks (calibrate.py) time matrix products well but cannot see what a model's
token costs besides them: llama.cpp builds, allocates and schedules the whole graph for every
micro-batch, and runs ~16 small ops per layer (norms, RoPE, KV copies, softmax, adds), each with a
thread hand-off. A chain of tiny ops measured ~30 ns per node on this host, while real decode
implied 0.5-1 us.

So the term is measured where it occurs: llama-bench of the same llama.cpp build on a tiny random
Llama GGUF written here (30 layers like SmolLM2, width 64, a 312-token byte + letter vocabulary), whose
weights, head and KV cache are negligible. Its decode time per token and prefill time per 64-token
micro-batch, minus what the latency model predicts for those negligible weights, divided by its op
count (the model's own N_ops formula), are the per-op costs of decode and prefill. The same graph
structure scales with n_layer in every model, which is what the N_ops term assumes.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .tiny_llama import Shape, byte_letter_tokenizer, write_random_llama

N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, N_FF = 30, 64, 4, 2, 128
N_PROMPT = N_GEN = 64
VERSION = 3  # bump when the file changes (cached by name); 3: written by tiny_llama.py


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A random Llama GGUF of N_LAYER x N_EMBD, F16 matrices, an SPM vocabulary of bytes and letters (312 tokens)."""
    return write_random_llama(path, Shape(N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, N_FF), tokenizer=byte_letter_tokenizer,
                              seed=seed, name="finllm-edge graph calibration (random weights)")


def tiny_model(cache: Path) -> Path:
    path = cache / f"graph-calibration-v{VERSION}.gguf"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        write_tiny_gguf(path)
    return path


def measure(llama_bench: Path, model: Path, threads: int, reps: int) -> dict[str, list[float]]:
    """Seconds per decoded token ("tg") and per 64-token prefill micro-batch ("pp"), every repetition."""
    from finllm_edge.lab.llama_bench import rates

    r = rates(llama_bench, model, threads, reps, N_PROMPT, N_GEN)
    return {"pp": [N_PROMPT / ts for ts in r["pp"]], "tg": [1.0 / ts for ts in r["tg"]]}


def per_op_costs(cal, llama_bench: Path, cache: Path, threads: list[int], reps: int) -> dict:
    """Measure the tiny graph and derive, per thread count, seconds per op of decode and of a prefill
    micro-batch as calibrate.Rate (best, median), plus the raw figures. `cal`: the micro-benchmark
    rates (HostCalibration) that predict the tiny model's own weight, head and KV time."""
    from finllm_edge.lab.calibrate import Rate
    from finllm_edge.lab.estimate import model_stats
    from finllm_edge.lab.latency_model import host_terms, n_ops

    model = tiny_model(cache)
    stats = model_stats(model)
    ops = n_ops(stats)
    out: dict = {"model": str(model), "n_ops": ops, "decode": {}, "prefill": {}, "raw": {}}
    for t in threads:
        m = measure(llama_bench, model, t, reps)
        out["raw"][t] = m
        for key, which in (("best", "best"), ("median", "median")):
            terms = host_terms(stats, cal, t, N_PROMPT, N_GEN, which=which, per_op=False)
            pick = min if key == "best" else statistics.median
            out["decode"].setdefault(t, {})[key] = max(0.0, (pick(m["tg"]) - terms.decode_s) / ops)
            out["prefill"].setdefault(t, {})[key] = max(0.0, (pick(m["pp"]) - terms.prefill_s) / ops)
    return {"model": out["model"], "n_ops": ops, "raw": out["raw"],
            "decode": {t: Rate(**v) for t, v in out["decode"].items()},
            "prefill": {t: Rate(**v) for t, v in out["prefill"].items()}}
