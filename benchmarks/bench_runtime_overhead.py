"""Runtime overhead: finllm_edge.Engine and fe-bench against upstream llama-bench, side by side.

Same llama.cpp tree (the pinned llama-cpp-python wheel and the native/ host build are built
from one sdist with the same x86 flags), same model (SmolLM2-135M-Instruct re-quantized to
Q4_0 with the built llama-quantize), same threads and lengths:

    python benchmarks/bench_runtime_overhead.py [--rounds 9 -t 2 --n-prompt 64 --n-gen 64 -r 5]

This is the one overhead benchmark for both runtimes (issue 2: fe-bench, issue 4: Engine).
Target (issues 2 and 4): fe-bench and Engine decode tok/s >= 0.97 x llama-bench.

Method (this machine is shared and noisy, so only paired ratios mean anything):
- every runner is a fresh process doing the same thing: load, one warm-up, then `-r` measured
  repetitions; its figure is the median over repetitions (llama-bench: median of samples_ts).
  Engine runs through `finllm-edge bench`, fe-bench as itself, llama-bench as two single-test
  runs: `-p N -n 0` for prefill and `-p 0 -n N -d N` for decode, because the Engine and fe-bench
  decode after an N-token prompt. (Do not compare with the tg of a multi-test llama-bench run:
  measured here, its later tests run about 2-3% faster than the same test alone, as the process
  is warmer; a single test per process is the like-for-like reference.)
- the runners are interleaved round by round with a rotating order; a round's runs are
  adjacent in time, so the ratio within a round cancels most background load. The result is
  the median over rounds of those ratios, with their range.

Binaries: finllm_edge.native.build.existing_build("host") (or --build to build them), i.e.
<cache>/llama/host-*/prefix/bin/{llama-bench,llama-quantize} and <cache>/native/host-*/bin/fe-bench.
If fe-bench is not built yet, its column is skipped and the script says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from finllm_edge.models import default_model_path
from finllm_edge.native.build import heavy_lock
from finllm_edge.paths import cache_dir

TARGET = 0.97


def find_tools(build: bool) -> dict[str, Path | None]:
    info = None
    try:
        from finllm_edge.native import build as nb

        info = nb.ensure_built("host") if build else nb.existing_build("host")
    except Exception as exc:  # the native build driver is another module; fall back to the cache layout
        print(f"[overhead] native build driver unavailable ({exc}); looking in the cache", file=sys.stderr)
    tools: dict[str, Path | None] = {"llama-bench": None, "llama-quantize": None, "fe-bench": None}
    if info is not None:
        tools.update({"llama-bench": info.tools.get("llama-bench"), "llama-quantize": info.tools.get("llama-quantize"),
                      "fe-bench": info.fe_bench})
    cache = cache_dir()
    for name in ("llama-bench", "llama-quantize"):
        if tools[name] is None or not tools[name].exists():
            tools[name] = next(iter(sorted(cache.glob(f"llama/host-*/prefix/bin/{name}"))), None)
    if tools["fe-bench"] is None or not tools["fe-bench"].exists():
        tools["fe-bench"] = next(iter(sorted(cache.glob("native/host-*/bin/fe-bench"))), None)
    return tools


def q4_0_model(quantize: Path, src: Path) -> Path:
    out = cache_dir() / "bench-models" / (src.name.split(".")[0] + ".Q4_0.gguf")
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".gguf.part")
    print(f"[overhead] quantizing {src.name} -> {out.name} (--allow-requantize)", file=sys.stderr)
    subprocess.run([str(quantize), "--allow-requantize", str(src), str(tmp), "Q4_0", "2"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tmp.replace(out)
    return out


def run_engine(model: Path, a) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "bench.json"
        subprocess.run([sys.executable, "-m", "finllm_edge.cli", "bench", str(model), "-t", str(a.threads),
                        "--n-prompt", str(a.n_prompt), "--n-gen", str(a.n_gen), "-r", str(a.repetitions),
                        "--warmup", "1", "-o", str(out)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        p = json.loads(out.read_text())["profiles"][0]
    return _figures(p)


def run_fe_bench(exe: Path, model: Path, a) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "p.json"
        subprocess.run([str(exe), "-m", str(model), "-t", str(a.threads), "-p", str(a.n_prompt), "-n", str(a.n_gen),
                        "-r", str(a.repetitions), "--warmup", "1", "--json-only", "-o", str(out)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        p = json.loads(out.read_text())
    return _figures(p)


def _figures(p: dict) -> dict:
    return {"pp": p["prefill_tok_s"], "tg": p["decode_tok_s"],
            "pp_best": p["prefill_tok_s_max"], "tg_best": p["decode_tok_s_max"]}


def _llama_bench_samples(exe: Path, model: Path, a, test: list[str]) -> list[float]:
    cmd = [str(exe), "-m", str(model), "-t", str(a.threads), "-r", str(a.repetitions), "-o", "json", *test]
    rows = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    if len(rows) != 1:
        raise RuntimeError(f"llama-bench returned {len(rows)} results for {' '.join(test)}")
    return [float(x) for x in rows[0]["samples_ts"]]


def run_llama_bench(exe: Path, model: Path, a) -> dict:
    pp = _llama_bench_samples(exe, model, a, ["-p", str(a.n_prompt), "-n", "0"])
    tg = _llama_bench_samples(exe, model, a, ["-p", "0", "-n", str(a.n_gen), "-d", str(a.n_prompt)])
    return {"pp": statistics.median(pp), "tg": statistics.median(tg), "pp_best": max(pp), "tg_best": max(tg)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Engine vs fe-bench vs llama-bench (same tree, model, threads)")
    ap.add_argument("--model", type=Path, default=None, help="GGUF to use as is (default: SmolLM2 -> Q4_0)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--n-prompt", type=int, default=64)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--build", action="store_true", help="build the native host target if missing")
    ap.add_argument("-o", "--output", type=Path, default=Path("out/bench/runtime_overhead.json"))
    ap.add_argument("--no-lock", action="store_true")
    a = ap.parse_args(argv)
    tools = find_tools(a.build)
    if tools["llama-bench"] is None:
        print("[overhead] llama-bench is not built: run `finllm-edge native build --target host` (or --build)",
              file=sys.stderr)
        return 2
    if a.model:
        model = a.model
    elif tools["llama-quantize"] is not None:
        model = q4_0_model(tools["llama-quantize"], default_model_path())
    else:
        print("[overhead] llama-quantize is not built; pass --model", file=sys.stderr)
        return 2
    if tools["fe-bench"] is None:
        print("[overhead] fe-bench is not built yet: comparing Engine with llama-bench only", file=sys.stderr)
    samples: dict[str, list[dict]] = {"engine": [], "fe-bench": [], "llama-bench": []}
    lock = contextlib.nullcontext() if a.no_lock else heavy_lock()
    with lock:
        runners = [("engine", lambda: run_engine(model, a)),
                   ("llama-bench", lambda: run_llama_bench(tools["llama-bench"], model, a))]
        if tools["fe-bench"] is not None:
            runners.insert(1, ("fe-bench", lambda: run_fe_bench(tools["fe-bench"], model, a)))
        for rnd in range(a.rounds):
            order = runners[rnd % len(runners):] + runners[:rnd % len(runners)]
            for name, fn in order:
                samples[name].append(fn())
                print(f"[overhead] round {rnd + 1}/{a.rounds} {name}: {samples[name][-1]}", file=sys.stderr)
    med = {name: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for name, runs in samples.items() if runs}
    keys = ("pp", "tg", "pp_best", "tg_best")
    paired = {name: {k: [s[k] / r[k] for s, r in zip(runs, samples["llama-bench"])] for k in keys}
              for name, runs in samples.items() if runs and name != "llama-bench"}
    ratios = {name: {k: statistics.median(v) for k, v in p.items()} for name, p in paired.items()}
    ranges = {name: {k: [min(v), max(v)] for k, v in p.items()} for name, p in paired.items()}
    meets = {name: r["tg"] >= TARGET for name, r in ratios.items()}
    doc = {"model": str(model), "threads": a.threads, "n_prompt": a.n_prompt, "n_gen": a.n_gen,
           "repetitions": a.repetitions, "rounds": a.rounds, "median_tok_s": med,
           "ratio_vs_llama_bench": ratios, "ratio_range": ranges, "samples": samples,
           "target_decode_ratio": TARGET, "meets_target": meets, "fe_bench_built": tools["fe-bench"] is not None}
    print(f"\n{model.name}, {a.threads} threads, pp{a.n_prompt} / tg{a.n_gen} (llama-bench tg at depth "
          f"{a.n_prompt}), {a.rounds} interleaved rounds x {a.repetitions} reps, fresh process per run")
    print("ratio = median over rounds of (runner / llama-bench within the round) [min-max over rounds]")
    print(f"{'runner':12} {'prefill tok/s':>14} {'decode tok/s':>13} {'pp ratio':>22} {'tg ratio':>22}")
    for label, (kp, kt) in (("median repetition", ("pp", "tg")), ("best repetition", ("pp_best", "tg_best"))):
        print(f"-- tok/s of the {label} of each run --")
        for name, m in med.items():
            if name == "llama-bench":
                print(f"{name:12} {m[kp]:14.1f} {m[kt]:13.1f} {'1':>22} {'1':>22}")
                continue
            cells = [f"{ratios[name][k]:.3f} [{ranges[name][k][0]:.3f}-{ranges[name][k][1]:.3f}]" for k in (kp, kt)]
            print(f"{name:12} {m[kp]:14.1f} {m[kt]:13.1f} {cells[0]:>22} {cells[1]:>22}")
    print("(interference from other jobs only ever slows a repetition down, so the best repetition is the "
          "least disturbed estimate of each runner's own speed; the target is checked on the median)")
    for name, ok in meets.items():
        print(f"{name} decode / llama-bench = {ratios[name]['tg']:.3f} -> {'meets' if ok else 'MISSES'} the "
              f"{TARGET} target")
    print(json.dumps(doc, indent=2))
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
