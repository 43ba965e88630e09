"""AWQ vs llama.cpp's importance matrix on SmolLM2-135M-Instruct + the shipped finance adapter.

Calibration: convert/data/finance_train.txt; evaluation: convert/data/finance_heldout.txt
(never seen by calibration or training). Prints bits/weight, size, PPL ratio, mean KLD and
top-1 agreement vs the fp16 merged model for every recipe, the KLD ratios the AWQ issue
targets, and the seed's bar (PPL ratio <= 1.02 with top-1 >= 95%). JSON + table.

    python benchmarks/bench_awq.py [--out out/bench/awq] [--bpw-budget 5.8] [--clip]
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
    ap.add_argument("--bpw-budget", type=float, default=5.8)
    ap.add_argument("--grid", type=int, default=10)
    ap.add_argument("--clip", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    from finllm_edge_convert.pipeline import ConvertOptions, convert

    t0 = time.perf_counter()
    res = convert(ConvertOptions(out=a.out, quants=["q4_0", "q4_k_m"], awq=True, awq_grid=a.grid, awq_clip=a.clip,
                                 imatrix=True, bpw_budget=a.bpw_budget, parity=False, cross_check=False,
                                 threads=a.threads, progress=False),
                  log=lambda m: print(m, file=sys.stderr, flush=True))
    wall = time.perf_counter() - t0
    rows = {r["name"]: r for r in res.quality}
    arts = res.artifacts
    table = []
    for name, r in rows.items():
        table.append({"artifact": name, "bits_per_weight": round(arts[name]["bits_per_weight"], 3),
                      "size_mib": round(arts[name]["file_bytes"] / 2**20, 2), "ppl_ratio": round(r["ppl_ratio"], 4),
                      "mean_kld": round(r["mean_kld"], 5), "top1": round(r["top1_agreement"], 4)})

    def best(prefix_q):
        cands = [t for t in table if t["artifact"].startswith("awq") and t["artifact"].endswith(prefix_q)
                 and "mixed" not in t["artifact"]]
        return min(cands, key=lambda t: t["mean_kld"])

    by = {t["artifact"]: t for t in table}
    targets = {}
    for q, limit in (("q4_0", 0.6), ("q4_k_m", 0.7)):
        b, ref = best(q), by[f"imatrix-{q}"]
        targets[q] = {"best_awq": b["artifact"], "kld_ratio_vs_imatrix": round(b["mean_kld"] / ref["mean_kld"], 3),
                      "target": limit, "met": b["mean_kld"] / ref["mean_kld"] <= limit,
                      "size_ratio": round(b["size_mib"] / ref["size_mib"], 4)}
    seed = [t["artifact"] for t in table if t["ppl_ratio"] <= 1.02 and t["top1"] >= 0.95 and t["bits_per_weight"] <= 5.0]
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
        print(f"{q}: best AWQ {t['best_awq']} KLD = {t['kld_ratio_vs_imatrix']} x imatrix (target <= {t['target']}: "
              f"{'met' if t['met'] else 'MISSED'}), size ratio {t['size_ratio']}")
    print(f"seed bar (PPL ratio <= 1.02, top-1 >= 95%, <= 5.0 bpw): {seed or 'not met'}; wall {wall:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
