"""x86-64 host variants side by side: the AVX-512+VNNI build against the AVX2 baseline.

Same pinned llama.cpp tree, same model (SmolLM2-135M-Instruct re-quantized to Q4_0 with the
baseline prefix's llama-quantize, bench_runtime_overhead.q4_0_model), same threads:

    python benchmarks/bench_host_variants.py [--rounds 4 -r 3 --threads 1 2]

For each variant (native/variants.json, x86_64; `finllm-edge native build --target
host-variants` builds them):
- upstream llama-bench from the variant's stage-1 prefix: pp64, pp128 (`-p N -n 0`) and tg64
  (`-p 0 -n 64`), median of its samples;
- our fe-bench from the variant's native build: prefill of 64 and 128 tokens and decode of
  64 tokens after the 64-token prompt (`-p 64 -n 64`, `-p 128 -n 64`), median over repetitions.

Method (shared, noisy 2-core machine: only paired ratios mean anything): rounds; within a
round each (tool, test, threads) cell runs every variant back to back in a rotating order,
so background load hits both sides alike. Result: per cell, the median over rounds of the
per-round ratio avx512 / avx2, with its range, plus the median tok/s of each variant.

Measurement holds the heavy lock (~/.cache/finllm-edge/heavy.lock, like every compile), so
do not wrap this script in `flock` on that same file (it would wait on itself). Writes JSON
(-o) and prints a Markdown table. A variant this CPU cannot run is refused, not skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime_overhead import q4_0_model  # noqa: E402  (the one Q4_0 helper)

from finllm_edge import cpu_variant  # noqa: E402
from finllm_edge.lab import llama_bench  # noqa: E402
from finllm_edge.models import default_model_path  # noqa: E402
from finllm_edge.native import build as nb  # noqa: E402
from finllm_edge.native.targets import HOST_VARIANT_TARGETS  # noqa: E402


def _llama_bench(exe: Path, model: Path, threads: int, reps: int, test: list[str]) -> float:
    return statistics.median(float(x) for x in llama_bench.one_row(exe, model, threads, reps, *test)["samples_ts"])


def _fe_bench(exe: Path, model: Path, threads: int, reps: int, n_prompt: int, n_gen: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "p.json"
        subprocess.run([str(exe), "-m", str(model), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
                        "-r", str(reps), "--warmup", "1", "--json-only", "-o", str(out)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return json.loads(out.read_text())


def _cells(threads: list[int]) -> list[tuple[str, str, int]]:
    """(tool, test, threads); fe-bench's tg64 comes from its -p 64 -n 64 run."""
    out = []
    for t in threads:
        out += [("llama-bench", "pp64", t), ("llama-bench", "pp128", t), ("llama-bench", "tg64", t),
                ("fe-bench", "pp64+tg64", t), ("fe-bench", "pp128", t)]
    return out


def _measure(tool: str, test: str, t: int, info: nb.BuildInfo, model: Path, reps: int) -> dict[str, float]:
    if tool == "llama-bench":
        exe = info.tools["llama-bench"]
        if test.startswith("pp"):
            return {test: _llama_bench(exe, model, t, reps, ["-p", test[2:], "-n", "0"])}
        return {test: _llama_bench(exe, model, t, reps, ["-p", "0", "-n", test[2:]])}
    if test == "pp64+tg64":
        p = _fe_bench(info.fe_bench, model, t, reps, 64, 64)
        return {"pp64": p["prefill_tok_s"], "tg64": p["decode_tok_s"]}
    p = _fe_bench(info.fe_bench, model, t, reps, 128, 64)
    return {"pp128": p["prefill_tok_s"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="AVX-512+VNNI vs AVX2 host variants (llama-bench and fe-bench)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("-r", "--repetitions", type=int, default=3, help="repetitions per run (default 3)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--model", type=Path, default=None, help="GGUF to use as is (default: SmolLM2 -> Q4_0)")
    ap.add_argument("--build", action="store_true", help="build the variants first if needed")
    ap.add_argument("-o", "--output", type=Path, default=Path("out/bench/host_variants.json"))
    a = ap.parse_args(argv)

    feats = cpu_variant.host_features("x86_64")
    table = cpu_variant.arch_table("x86_64")
    infos: dict[str, nb.BuildInfo] = {}
    for target in HOST_VARIANT_TARGETS:
        v = table.variant(target)
        if not cpu_variant.variant_runs(feats, v):
            print(f"[variants] this CPU cannot run {v.name} ({cpu_variant.describe(feats, 'x86_64')})", file=sys.stderr)
            return 2
        info = nb.ensure_built(target) if a.build else nb.existing_build(target)
        if info is None:
            print(f"[variants] {target} is not built; run `finllm-edge native build --target host-variants` "
                  f"or pass --build", file=sys.stderr)
            return 2
        infos[v.name] = info
    names = list(infos)                 # best first: [avx512, avx2]
    best, base = names[0], names[-1]
    base_info = infos[base]
    model = a.model or q4_0_model(base_info.tools["llama-quantize"], default_model_path())

    cells = _cells(a.threads)
    # samples[(tool, test, threads)][variant] = [tok/s per round]
    samples: dict[tuple[str, str, int], dict[str, list[float]]] = {}
    t0 = time.time()
    load_start = Path("/proc/loadavg").read_text().split()[:3]
    with nb.heavy_lock():
        for r in range(a.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for tool, test, t in cells:
                for name in order:
                    for k, val in _measure(tool, test, t, infos[name], model, a.repetitions).items():
                        samples.setdefault((tool, k, t), {}).setdefault(name, []).append(val)
            print(f"[variants] round {r + 1}/{a.rounds} done ({time.time() - t0:.0f} s)", file=sys.stderr)

    rows = []
    for (tool, test, t), by in sorted(samples.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])):
        ratios = [x / y for x, y in zip(by[best], by[base])]
        rows.append({"tool": tool, "test": test, "threads": t,
                     f"{best}_tok_s": round(statistics.median(by[best]), 1),
                     f"{base}_tok_s": round(statistics.median(by[base]), 1),
                     "ratio_median": round(statistics.median(ratios), 3),
                     "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
                     "rounds": len(ratios)})
    result = {
        "benchmark": "host_variants", "model": str(model), "variants": names,
        "cpu": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")), platform.processor()),
        "llama_cpp_version": base_info.llama_cpp_version, "rounds": a.rounds, "repetitions": a.repetitions,
        "threads": a.threads, "seconds": round(time.time() - t0, 1),
        "loadavg_start": load_start, "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
        "command": " ".join([sys.executable, *sys.argv]), "rows": rows,
    }
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{best} vs {base}: median over {a.rounds} rounds of per-round ratios "
          f"(model {model.name}, {a.repetitions} reps per run)\n")
    print(f"| tool | test | threads | {best} tok/s | {base} tok/s | ratio (min-max) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['tool']} | {row['test']} | {row['threads']} | {row[f'{best}_tok_s']} | {row[f'{base}_tok_s']} "
              f"| {row['ratio_median']:.2f}x ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) |")
    print(f"\nJSON: {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
