"""Runtime overhead: finllm_edge.Engine and fe-bench against upstream llama-bench, side by side.

Same llama.cpp tree (the pinned llama-cpp-python wheel and the native/ host build are built
from one sdist with the same x86 flags), same model (SmolLM2-135M-Instruct re-quantized to
Q4_0 with the built llama-quantize), same threads and lengths. The three runners are
interleaved round by round (rotating their order) and the medians compared:

    python benchmarks/bench_runtime_overhead.py [--rounds 3 -t 2 --n-prompt 64 --n-gen 64 -r 5]

Target (issue 4): Engine decode tok/s >= 0.97 x llama-bench. llama-bench's tg test decodes
from an empty context, the Engine and fe-bench decode after the prompt, so llama-bench runs
tg at depth n_prompt (`-d`) too; that is the reference for decode.

Binaries: finllm_edge.native.build.existing_build("host") (or --build to build them), i.e.
<cache>/llama/host-*/prefix/bin/{llama-bench,llama-quantize} and <cache>/native/host-*/bin/fe-bench.
If fe-bench is not built yet, its column is skipped and the script says so.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from finllm_edge.engine import Engine, EngineOptions
from finllm_edge.models import default_model_path
from finllm_edge.paths import cache_dir

TARGET = 0.97


@contextlib.contextmanager
def heavy_lock():
    with open(cache_dir() / "heavy.lock", "a") as fh:
        print("[overhead] waiting for the heavy lock ...", file=sys.stderr, flush=True)
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


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


def run_engine(engine: Engine, a) -> dict:
    p = engine.benchmark(a.n_prompt, a.n_gen, a.repetitions, warmup=1)
    return {"pp": p["prefill_tok_s"], "tg": p["decode_tok_s"]}


def run_fe_bench(exe: Path, model: Path, a) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "p.json"
        subprocess.run([str(exe), "-m", str(model), "-t", str(a.threads), "-p", str(a.n_prompt), "-n", str(a.n_gen),
                        "-r", str(a.repetitions), "--warmup", "1", "--json-only", "-o", str(out)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        p = json.loads(out.read_text())
    return {"pp": p["prefill_tok_s"], "tg": p["decode_tok_s"]}


def run_llama_bench(exe: Path, model: Path, a) -> dict:
    cmd = [str(exe), "-m", str(model), "-t", str(a.threads), "-p", str(a.n_prompt), "-n", str(a.n_gen),
           "-d", f"0,{a.n_prompt}", "-r", str(a.repetitions), "-o", "json"]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    rows = json.loads(res.stdout)
    out = {}
    for r in rows:
        kind = "pp" if r["n_prompt"] > 0 else "tg"
        out[f"{kind}@d{r['n_depth']}"] = r["avg_ts"]
    return {"pp": out["pp@d0"], "tg": out[f"tg@d{a.n_prompt}"], "tg@d0": out["tg@d0"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Engine vs fe-bench vs llama-bench (same tree, model, threads)")
    ap.add_argument("--model", type=Path, default=None, help="GGUF to use as is (default: SmolLM2 -> Q4_0)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--n-prompt", type=int, default=64)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
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
    with lock, Engine(model, options=EngineOptions(n_threads=a.threads, n_ctx=a.n_prompt + a.n_gen + 16)) as eng:
        runners = [("engine", lambda: run_engine(eng, a)),
                   ("llama-bench", lambda: run_llama_bench(tools["llama-bench"], model, a))]
        if tools["fe-bench"] is not None:
            runners.insert(1, ("fe-bench", lambda: run_fe_bench(tools["fe-bench"], model, a)))
        for rnd in range(a.rounds):
            order = runners[rnd % len(runners):] + runners[:rnd % len(runners)]
            for name, fn in order:
                samples[name].append(fn())
                print(f"[overhead] round {rnd + 1}/{a.rounds} {name}: {samples[name][-1]}", file=sys.stderr)
    med = {name: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for name, runs in samples.items() if runs}
    ref = med["llama-bench"]
    # Primary: the median over rounds of the ratio within a round (the runs of one round are
    # adjacent in time, so they share the machine's background load); also the ratio of medians.
    ratios = {name: {k: statistics.median(s[k] / r[k] for s, r in zip(runs, samples["llama-bench"]))
                     for k in ("pp", "tg")}
              for name, runs in samples.items() if runs and name != "llama-bench"}
    ratio_of_medians = {name: {"pp": m["pp"] / ref["pp"], "tg": m["tg"] / ref["tg"]} for name, m in med.items()
                        if name != "llama-bench"}
    doc = {"model": str(model), "threads": a.threads, "n_prompt": a.n_prompt, "n_gen": a.n_gen,
           "repetitions": a.repetitions, "rounds": a.rounds, "median_tok_s": med, "ratio_vs_llama_bench": ratios,
           "ratio_of_medians": ratio_of_medians,
           "samples": samples, "target_decode_ratio": TARGET,
           "engine_meets_target": ratios["engine"]["tg"] >= TARGET,
           "fe_bench_built": tools["fe-bench"] is not None}
    print(f"\n{model.name}, {a.threads} threads, pp{a.n_prompt} / tg{a.n_gen} "
          f"(llama-bench tg at depth {a.n_prompt}), median of {a.rounds} interleaved rounds x {a.repetitions} reps")
    print("ratios: median over rounds of (runner / llama-bench within the round)")
    print(f"{'runner':12} {'prefill tok/s':>14} {'decode tok/s':>13} {'pp ratio':>9} {'tg ratio':>9}")
    for name, m in med.items():
        r = ratios.get(name, {"pp": 1.0, "tg": 1.0})
        print(f"{name:12} {m['pp']:14.1f} {m['tg']:13.1f} {r['pp']:9.3f} {r['tg']:9.3f}")
    print(f"llama-bench tg at depth 0: {ref['tg@d0']:.1f} tok/s")
    verdict = "meets" if doc["engine_meets_target"] else "MISSES"
    print(f"Engine decode / llama-bench = {ratios['engine']['tg']:.3f} -> {verdict} the {TARGET} target")
    print(json.dumps(doc, indent=2))
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
