"""How good is the latency estimate? Host error against llama-bench, ARM error against published figures.

    flock ~/.cache/finllm-edge/heavy.lock python benchmarks/bench_estimate.py --no-lock [--rounds 3 -r 3]

1. Host: calibrate the model with the kernel micro-benchmarks (finllm_edge.lab.calibrate: per
   weight type, then per weight shape of the four files; --no-shapes keeps the per-type rates), then
   measure SmolLM2-135M F16 / Q8_0 / Q4_0 / Q4_K_M with llama-bench of the same llama.cpp build
   (AVX-512 variant; --avx2 adds one AVX2 pass for reference) at 1 and 2 threads, pp64 and tg64.
   Rounds interleave calibration and measurement, the order rotating; both sides are best-of
   (background load only slows a run down). error = estimate / measured - 1 on tok/s.
2. ARM: leave-one-out over devices/published_arm.json (each published point predicted by constants
   fitted without it).
3. Snapdragon 865: the end-to-end estimate of a finance question (system prompt + question,
   64-token answer) for SmolLM2-135M and 0.5B / 1.1B configurations, with and without prefix reuse.

Prints tables and writes out/bench/estimate_calibration.json (and caches the host calibration
for `finllm-edge bench --estimate`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from finllm_edge.lab.calibrate import Rate, calibrate_host, calibrate_shapes, llama_prefix
from finllm_edge.lab.estimate import ModelStats, estimate, load_device, model_stats
from finllm_edge.lab.latency_model import host_terms, loo_errors
from finllm_edge.lab.llama_bench import rates as llama_bench_rates
from finllm_edge.models import default_model_path
from finllm_edge.paths import cache_dir

QUANTS = ("F16", "Q8_0", "Q4_0", "Q4_K_M")
CAL_CACHE = "kernel-bench/last_calibration.json"
# a typical finance question through the chat template: ASSUMED round token counts (not tokenized here)
SYSTEM_TOKENS, QUESTION_TOKENS, ANSWER_TOKENS = 120, 40, 64


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def variant_model(quant: str) -> Path:
    src = default_model_path()
    out = cache_dir() / "bench-models" / (src.name.split(".")[0] + f".{quant}.gguf")
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".gguf.part")
        subprocess.run([str(llama_prefix() / "bin" / "llama-quantize"), "--allow-requantize", str(src), str(tmp),
                        quant, "2"], check=True, capture_output=True)
        tmp.rename(out)
    return out


def llama_bench(binary: Path, model: Path, threads: int, n_prompt: int, n_gen: int, reps: int) -> dict:
    return llama_bench_rates(binary, model, threads, reps, n_prompt, n_gen)


def synthetic_stats(name, n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, tied, wtype="Q4_0",
                    head_type="Q8_0") -> ModelStats:
    """A llama-architecture configuration without a file (weights Q4_0, output head Q8_0, as llama-quantize)."""
    bits = {"Q4_0": 4.5, "Q8_0": 8.5, "F16": 16.0}
    hd = n_embd // n_head
    per_layer = n_embd * (n_embd + 2 * n_head_kv * hd) + n_embd * n_embd + 3 * n_embd * n_ff
    mm = n_layer * per_layer
    head = n_vocab * n_embd
    mm_b, head_b = int(mm * bits[wtype] / 8), int(head * bits[head_type] / 8)
    emb_b = 0 if tied else int(head * bits[head_type] / 8)
    return ModelStats(path=name, n_params=mm + head * (1 if tied else 2), matmul_params=mm + head,
                      weight_bytes=mm_b + head_b + emb_b, decode_weight_bytes=mm_b + head_b, n_layer=n_layer,
                      n_head=n_head, n_head_kv=n_head_kv, head_dim=hd, tied_embeddings=tied,
                      matmul_bytes_by_type={wtype: mm_b}, matmul_params_by_type={wtype: mm}, head_type=head_type,
                      head_bytes=head_b, head_params=head, n_embd=n_embd, n_vocab=n_vocab)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--n-prompt", type=int, default=64)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--avx2", action="store_true", help="also one llama-bench pass of the AVX2 build (reference)")
    ap.add_argument("--no-shapes", action="store_true",
                    help="estimate with per-type kernel rates only (skip the per-shape micro-benchmarks)")
    ap.add_argument("--no-lock", action="store_true", help="the caller holds the heavy lock (flock ... python ...)")
    ap.add_argument("-o", "--output", type=Path, default=Path("out/bench/estimate_calibration.json"))
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    lock = contextlib.nullcontext()
    if not args.no_lock:
        from finllm_edge.native.build import heavy_lock

        lock = heavy_lock()
    models = {q: variant_model(q) for q in QUANTS}
    stats = {q: model_stats(p) for q, p in models.items()}
    types = sorted({t for s in stats.values() for t in s.matmul_bytes_by_type} | {s.head_type for s in stats.values()}
                   | {"F16", "Q4_0"})
    shapes = [] if args.no_shapes else sorted({k for s in stats.values() for k in s.matmul_bytes_by_shape}
                                              | {s.head_shape for s in stats.values() if s.head_shape})
    bench = llama_prefix() / "bin" / "llama-bench"
    meas: dict[tuple[str, int], dict[str, list[float]]] = {}
    cal = None
    load = {"before": loadavg()}
    with lock:
        load["locked"] = loadavg()
        for rnd in range(args.rounds):
            c = calibrate_host(types, threads, reps=5)
            calibrate_shapes(c, shapes, threads, reps=5)
            cal = c if cal is None else (cal.merge_best(c) or cal)
            order = list(models.items())
            order = order[rnd % len(order):] + order[:rnd % len(order)]
            for q, path in order:
                for t in (threads if rnd % 2 == 0 else threads[::-1]):
                    r = llama_bench(bench, path, t, args.n_prompt, args.n_gen, args.repetitions)
                    m = meas.setdefault((q, t), {"pp": [], "tg": []})
                    m["pp"] += r["pp"]
                    m["tg"] += r["tg"]
            print(f"[bench_estimate] round {rnd + 1}/{args.rounds} done, calibration {cal.seconds:.0f} s so far, "
                  f"load {loadavg()}", file=sys.stderr, flush=True)
        avx2 = {}
        if args.avx2:
            b2 = llama_prefix("host") / "bin" / "llama-bench"
            for q, path in models.items():
                avx2[q] = {t: llama_bench(b2, path, t, args.n_prompt, args.n_gen, args.repetitions) for t in threads}
    load["after"] = loadavg()
    (cache_dir() / CAL_CACHE).parent.mkdir(parents=True, exist_ok=True)
    (cache_dir() / CAL_CACHE).write_text(json.dumps(cal.to_dict()))

    host_rows = []
    for (q, t), m in sorted(meas.items()):
        s = stats[q]
        best, slow = host_terms(s, cal, t, args.n_prompt, 0, "best"), host_terms(s, cal, t, args.n_prompt, 0, "median")
        for kind, est, lo in (("prefill", args.n_prompt / best.prefill_s, args.n_prompt / slow.prefill_s),
                              ("decode", 1.0 / best.decode_s, 1.0 / slow.decode_s)):
            vals = m["pp" if kind == "prefill" else "tg"]
            host_rows.append({"model": q, "threads": t, "phase": kind, "measured_best": max(vals),
                              "measured_median": statistics.median(vals), "estimate": est, "estimate_low": lo,
                              "error": est / max(vals) - 1, "decode_bound": best.decode_bound})
    errs = [abs(r["error"]) for r in host_rows]
    arm = loo_errors(cal)
    arm_errs = [abs(r[k]) for r in arm for k in ("error_pp", "error_tg")]

    sd = load_device("snapdragon-865")
    configs = {"SmolLM2-135M Q4_0 (file)": stats["Q4_0"],
               "Qwen2.5-0.5B-like Q4_0 (24 x 896, ff 4864, vocab 151936, tied)":
                   synthetic_stats("0.5B", 24, 896, 4864, 14, 2, 151936, True),
               "TinyLlama-1.1B-like Q4_0 (22 x 2048, ff 5632, vocab 32000)":
                   synthetic_stats("1.1B", 22, 2048, 5632, 32, 4, 32000, False)}
    sd_rows = []
    for name, s in configs.items():
        for reuse, n_new in (("no", SYSTEM_TOKENS + QUESTION_TOKENS), ("yes", QUESTION_TOKENS)):
            e = estimate(replace(s, path=name), sd, n_new, ANSWER_TOKENS, cal=cal)
            sd_rows.append({"config": name, "prefix_reuse": reuse, "prefilled_tokens": n_new,
                            "ttft_ms": e.ttft_ms_range, "decode_tok_s": e.decode_tok_s_range,
                            "e2e_ms": e.e2e_ms_range, "decode_bound": e.decode_bound, "why": e.why})

    doc = {"host": {"cpu": cal.cpu, "variant": cal.variant, "calibration_seconds": round(cal.seconds, 1),
                    "shape_rates": len(shapes),
                    "loadavg": load, "threads": threads, "rounds": args.rounds, "repetitions": args.repetitions,
                    "median_abs_error": statistics.median(errs), "worst_abs_error": max(errs),
                    "within_20pct": sum(e <= 0.2 for e in errs), "n": len(errs)},
           "host_rows": host_rows,
           "avx2_llama_bench": {q: {str(t): v for t, v in per.items()} for q, per in avx2.items()},
           "arm_loo": arm, "arm": {"median_abs_error": statistics.median(arm_errs), "worst_abs_error": max(arm_errs),
                                   "within_30pct": sum(e <= 0.3 for e in arm_errs), "n": len(arm_errs)},
           "snapdragon_865": sd_rows, "calibration": cal.to_dict()}
    print(f"host: {cal.cpu}, {cal.variant}; calibration {cal.seconds:.0f} s ({len(shapes)} weight shapes measured "
          f"besides the per-type rates); loadavg {load}")
    nan = Rate(float("nan"), float("nan"))
    per_op = "; ".join(f"{t} thr: decode {cal.node_s[t].best * 1e6:.2f} us, prefill micro-batch "
                       f"{cal.node_prefill_s.get(t, nan).best * 1e6:.2f} us, chain of tiny ops "
                       f"{cal.node_chain_s.get(t, nan).best * 1e6:.3f} us" for t in threads)
    print(f"per-op cost ({cal.graph.get('source', '?')}): {per_op}")
    print(f"{'model':8} {'thr':>3} {'phase':8} {'measured':>9} {'estimate':>9} {'error':>7}  bound")
    for r in host_rows:
        print(f"{r['model']:8} {r['threads']:3} {r['phase']:8} {r['measured_best']:9.1f} {r['estimate']:9.1f} "
              f"{r['error']:+7.1%}  {r['decode_bound'] if r['phase'] == 'decode' else ''}")
    h = doc["host"]
    print(f"host: median |error| {h['median_abs_error']:.1%}, worst {h['worst_abs_error']:.1%}, "
          f"{h['within_20pct']}/{h['n']} within 20%")
    print("\nARM, leave-one-out against published llama.cpp figures:")
    for r in arm:
        print(f"  {r['id']:24} pp {r['measured_pp']:7.2f} est {r['estimated_pp']:7.2f} {r['error_pp']:+6.0%} | "
              f"tg {r['measured_tg']:6.2f} est {r['estimated_tg']:6.2f} {r['error_tg']:+6.0%}  {r['url']}")
    a = doc["arm"]
    print(f"ARM: median |error| {a['median_abs_error']:.1%}, worst {a['worst_abs_error']:.1%}, "
          f"{a['within_30pct']}/{a['n']} within 30%")
    print("\nSnapdragon 865 ESTIMATE, finance question (system prompt + question, 64-token answer), 4 threads:")
    for r in sd_rows:
        print(f"  {r['config'][:44]:44} reuse {r['prefix_reuse']:3} prefill {r['prefilled_tokens']:3} tok: "
              f"TTFT {r['ttft_ms'][0]:.0f}-{r['ttft_ms'][1]:.0f} ms, decode {r['decode_tok_s'][0]:.0f}-"
              f"{r['decode_tok_s'][1]:.0f} tok/s, end-to-end {r['e2e_ms'][0]:.0f}-{r['e2e_ms'][1]:.0f} ms "
              f"({r['decode_bound']})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
