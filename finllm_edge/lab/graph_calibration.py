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

import numpy as np

N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, N_FF = 30, 64, 4, 2, 128
N_PROMPT = N_GEN = 64
VERSION = 2  # bump when the file's shape changes (cached by name)


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """A random Llama GGUF of N_LAYER x N_EMBD, F16 matrices, an SPM vocabulary of bytes and letters (312 tokens)."""
    import gguf

    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".part")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name("finllm-edge graph calibration (random weights)")
    w.add_context_length(2048)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    normal = ["\u2581"] + letters + ["\u2581" + c for c in letters]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + normal
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(normal))])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(normal))  # unknown, control x2, byte, normal
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    hd = N_EMBD // N_HEAD

    def mat(n_out: int, n_in: int) -> np.ndarray:
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float16)

    w.add_tensor("token_embd.weight", mat(len(tokens), N_EMBD))
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(p + "attn_q.weight", mat(N_EMBD, N_EMBD))
        w.add_tensor(p + "attn_k.weight", mat(N_HEAD_KV * hd, N_EMBD))
        w.add_tensor(p + "attn_v.weight", mat(N_HEAD_KV * hd, N_EMBD))
        w.add_tensor(p + "attn_output.weight", mat(N_EMBD, N_EMBD))
        w.add_tensor(p + "ffn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(p + "ffn_gate.weight", mat(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_up.weight", mat(N_FF, N_EMBD))
        w.add_tensor(p + "ffn_down.weight", mat(N_EMBD, N_FF))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.rename(path)
    return path


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
