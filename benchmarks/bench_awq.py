"""AWQ vs llama.cpp's importance matrix on SmolLM2-135M-Instruct + the shipped finance adapter.

Calibration: convert/data/finance_train.txt; evaluation: convert/data/finance_heldout.txt
(never seen by calibration or training). Prints bits/weight, size, PPL ratio, mean KLD and
top-1 agreement vs the fp16 merged model for every recipe, the KLD ratios the AWQ issue
targets (at equal file size, within 1%), and the seed's bar (PPL ratio <= 1.02 with top-1 >= 95%
at <= 5.0 bits/weight). JSON + table.

    python benchmarks/bench_awq.py [--out out/bench/awq] [--bpw-budget same] [--clip]

Rows: upstream plain and importance-matrix Q4_0 / Q4_K_M; AWQ; AWQ + an importance matrix of
the scaled model; AWQ + imatrix + mixed precision (--bpw-budget, default 'same': the size of
awq-imatrix, so it competes at equal size). One ablation row, imatrix-mixed-<quant>: upstream's
imatrix recipe given the same tensor-type plan without AWQ, to show what the plan alone buys.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("out/bench/awq"))
    ap.add_argument("--bpw-budget", default="same", help="bits/weight of the mixed artifacts, or 'same'")
    ap.add_argument("--grid", type=int, default=10)
    ap.add_argument("--clip", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    from finllm_edge_convert import quality
    from finllm_edge_convert.cli import _budget
    from finllm_edge_convert.pipeline import ConvertOptions, convert
    from finllm_edge_convert.quantize import gguf_weight_stats, quantize, tensor_type_counts

    t0 = time.perf_counter()
    opts = ConvertOptions(out=a.out, quants=["q4_0", "q4_k_m"], awq=True, awq_grid=a.grid, awq_clip=a.clip,
                          imatrix=True, bpw_budget=_budget(a.bpw_budget), parity=False, cross_check=False,
                          threads=a.threads, progress=False)
    res = convert(opts, log=lambda m: print(m, file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    arts = dict(res.artifacts)
    rows = {r["name"]: r for r in res.quality}

    # Ablation: upstream imatrix + the mixed plan (no AWQ), scored by the same evaluation.
    o = opts.resolved()
    ablation = {"f16": arts["f16"]}
    for q in ("q4_0", "q4_k_m"):
        plan = arts[f"awq-mixed-{q}"]["recipe"]["llama_quantize_args"]
        out = a.out / f"model-imatrix-mixed-{q}.gguf"
        quantize(Path(arts["f16"]["path"]), out, q, a.threads, imatrix=a.out / ".work" / "imatrix-plain.gguf",
                 extra_args=plan)
        ablation[f"imatrix-mixed-{q}"] = {"path": str(out), "quant": q.upper(), "tensor_types": tensor_type_counts(out),
                                          **gguf_weight_stats(out)}
    for r in quality.evaluate(ablation, "f16", o.eval_file.read_text(encoding="utf-8"), o.eval_ctx, o.eval_chunks,
                              a.threads)[1:]:
        rows[r.name] = {"name": r.name, "ppl_ratio": r.ppl_ratio, "mean_kld": r.mean_kld,
                        "top1_agreement": r.top1_agreement}
        arts[r.name] = ablation[r.name]

    table = []
    for name, r in rows.items():
        table.append({"artifact": name, "bits_per_weight": round(arts[name]["bits_per_weight"], 3),
                      "size_mib": round(arts[name]["file_bytes"] / 2**20, 2), "ppl_ratio": round(r["ppl_ratio"], 4),
                      "mean_kld": round(r["mean_kld"], 5), "top1": round(r["top1_agreement"], 4),
                      "tensor_types": arts[name].get("tensor_types", {})})
    by = {t["artifact"]: t for t in table}

    targets = {}
    for q, limit in (("q4_0", 0.6), ("q4_k_m", 0.7)):
        ref = by[f"imatrix-{q}"]
        same_size = [t for t in table if t["artifact"].startswith("awq") and t["artifact"].endswith(q)
                     and abs(t["size_mib"] / ref["size_mib"] - 1) <= 0.01]
        b = min(same_size, key=lambda t: t["mean_kld"])
        targets[q] = {"best_awq": b["artifact"], "kld_ratio_vs_imatrix": round(b["mean_kld"] / ref["mean_kld"], 3),
                      "target": limit, "met": b["mean_kld"] / ref["mean_kld"] <= limit,
                      "size_ratio": round(b["size_mib"] / ref["size_mib"], 4),
                      "considered": [t["artifact"] for t in same_size]}
    seed = [t["artifact"] for t in table
            if t["ppl_ratio"] <= 1.02 and t["top1"] >= 0.95 and t["bits_per_weight"] <= 5.0]
    out = {"rows": table, "targets": targets, "seed_bar_met_by_under_5bpw": seed, "wall_s": round(wall, 1),
           "stages_s": res.stages_seconds, "notes": res.notes}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_awq.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    print("\n| artifact | bits/weight | MiB | PPL ratio | mean KLD | top-1 |\n|---|---|---|---|---|---|")
    for t in table:
        print(f"| {t['artifact']} | {t['bits_per_weight']:.3f} | {t['size_mib']:.2f} | {t['ppl_ratio']:.4f} | "
              f"{t['mean_kld']:.5f} | {t['top1']:.1%} |")
    for q, t in targets.items():
        print(f"{q}: best AWQ artifact within 1% of imatrix-{q}'s size: {t['best_awq']}, KLD = "
              f"{t['kld_ratio_vs_imatrix']} x imatrix (target <= {t['target']}: {'met' if t['met'] else 'MISSED'}), "
              f"size ratio {t['size_ratio']}")
    print(f"seed bar (PPL ratio <= 1.02, top-1 >= 95%, <= 5.0 bpw): {seed or 'not met'}")
    print(f"convert stages (s): {out['stages_s']}; wall {wall:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
