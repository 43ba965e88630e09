"""ONNX int4 vs GGUF Q4_0 vs GGUF Q4_K_M on SmolLM2-135M-Instruct + the shipped finance adapter.

One `finllm-edge convert --formats gguf,onnx --quant q4_0,q4_k_m` run makes the three artifacts
from the same merged model and scores them in its quality report (held-out finance text, against
the F16 merged model: PPL ratio, mean KLD, top-1 agreement). Then each artifact is benchmarked
with its runtime (OnnxEngine over onnxruntime-genai, Engine over llama.cpp), same finance prompt,
same threads, interleaved round by round; TTFT and tok/s are medians over rounds.

    python benchmarks/bench_onnx_vs_gguf.py [--threads 2] [--rounds 3] [--out out/bench/onnx_vs_gguf]
        [--awq]   # the artifacts from the AWQ-scaled model instead (awq-q4_0, awq-q4_k_m, ONNX from it)

Prints a table and writes <out>/bench_onnx_vs_gguf.json. This machine is shared and noisy: read
the speed columns as ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n-prompt", type=int, default=64)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--awq", action="store_true", help="AWQ-scaled artifacts (the ONNX export then uses them too)")
    ap.add_argument("--out", type=Path, default=Path("out/bench/onnx_vs_gguf"))
    a = ap.parse_args()

    from finllm_edge.engine import Engine, EngineOptions
    from finllm_edge.onnx_engine import OnnxEngine
    from finllm_edge_convert.pipeline import ConvertOptions, convert

    t0 = time.perf_counter()
    res = convert(ConvertOptions(out=a.out, quants=["q4_0", "q4_k_m"], formats=["gguf", "onnx"], awq=a.awq,
                                 parity=False, cross_check=False, threads=a.threads, progress=False),
                  log=lambda m: print(m, file=sys.stderr, flush=True))
    convert_s = time.perf_counter() - t0
    scores = {r["name"]: r for r in res.quality}
    prefix = "awq-" if a.awq else ""
    names = {"ONNX int4 (onnxruntime-genai)": "onnx-int4", "GGUF Q4_0 (llama.cpp)": prefix + "q4_0",
             "GGUF Q4_K_M (llama.cpp)": prefix + "q4_k_m"}
    n_ctx = a.n_prompt + a.n_gen + 16
    bench = dict(n_prompt=a.n_prompt, n_gen=a.n_gen, repetitions=a.repetitions, warmup=1)

    def run(name: str) -> dict:
        art = res.artifacts[names[name]]
        if art.get("format") == "onnx":
            with OnnxEngine(art["dir"], n_threads=a.threads, n_ctx=n_ctx) as eng:
                return eng.benchmark(**bench)
        with Engine(art["path"], options=EngineOptions(n_threads=a.threads, n_ctx=n_ctx)) as eng:
            return eng.benchmark(**bench)

    profiles: dict[str, list[dict]] = {n: [] for n in names}
    order = list(names)
    for rnd in range(a.rounds):
        for name in order[rnd % len(order):] + order[:rnd % len(order)]:
            profiles[name].append(run(name))
            p = profiles[name][-1]
            print(f"[onnx-vs-gguf] round {rnd + 1}/{a.rounds} {name}: TTFT {p['ttft_ms']:.1f} ms, "
                  f"decode {p['decode_tok_s']:.1f} tok/s", file=sys.stderr)

    rows = []
    for name, key in names.items():
        q, art, ps = scores[key], res.artifacts[key], profiles[name]
        rows.append({"artifact": name, "name": key, "size_mib": round(art["file_bytes"] / 2**20, 2),
                     "bits_per_weight": round(art["bits_per_weight"], 3),
                     "ttft_ms": round(statistics.median(p["ttft_ms"] for p in ps), 2),
                     "prefill_tok_s": round(statistics.median(p["prefill_tok_s"] for p in ps), 1),
                     "decode_tok_s": round(statistics.median(p["decode_tok_s"] for p in ps), 1),
                     "top1_vs_fp16": q["top1_agreement"], "ppl_ratio": q["ppl_ratio"], "mean_kld": q["mean_kld"]})
    ref = rows[1]  # GGUF Q4_0
    print(f"\nSmolLM2-135M-Instruct + finance LoRA{' (AWQ-scaled)' if a.awq else ''}, {a.threads} threads, "
          f"pp{a.n_prompt} + tg{a.n_gen}, median of {a.rounds} interleaved rounds x {a.repetitions} reps; "
          f"quality on {res.quality_meta['eval_file']} vs the F16 merged model")
    print(f"{'artifact':<30}{'MiB':>7}{'bpw':>6}{'TTFT ms':>9}{'pp tok/s':>10}{'tg tok/s':>10}{'tg vs Q4_0':>11}"
          f"{'top-1':>8}{'PPL ratio':>10}{'KLD':>8}")
    for r in rows:
        print(f"{r['artifact']:<30}{r['size_mib']:>7.1f}{r['bits_per_weight']:>6.2f}{r['ttft_ms']:>9.1f}"
              f"{r['prefill_tok_s']:>10.1f}{r['decode_tok_s']:>10.1f}{r['decode_tok_s'] / ref['decode_tok_s']:>11.2f}"
              f"{100 * r['top1_vs_fp16']:>7.1f}%{r['ppl_ratio']:>10.4f}{r['mean_kld']:>8.4f}")
    doc = {"threads": a.threads, "rounds": a.rounds, "n_prompt": a.n_prompt, "n_gen": a.n_gen, "awq": a.awq,
           "convert_s": round(convert_s, 1), "quality_meta": res.quality_meta, "rows": rows, "profiles": profiles}
    out = a.out / "bench_onnx_vs_gguf.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
