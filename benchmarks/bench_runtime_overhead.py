"""Runtime overhead: finllm_edge.Engine and fe-bench against upstream llama-bench, side by side.

Same llama.cpp tree (the pinned llama-cpp-python wheel and the native/ host build are built
from one sdist with the same x86 flags), same model (SmolLM2-135M-Instruct re-quantized to
Q4_0 with the built llama-quantize), same threads and lengths:

    python benchmarks/bench_runtime_overhead.py [--rounds 9 -t 2 --n-prompt 64 --n-gen 64 -r 5]

This is the one overhead benchmark for both runtimes (issue 2: fe-bench, issue 4: Engine).
Target (issue 14): fe-bench and Engine decode and prefill tok/s >= 0.98 x llama-bench of the same build, where
llama-bench's decode is measured the way ours happens: right after the N-token prompt (its
`-pg N,N` test time minus its `-p N` time). Its decode alone (`-n N -d N`, KV state restored,
no prefill just before) is printed beside it: measured here, llama-bench's own decode after a
prompt is ~3.5% slower than its decode alone, so that reference is not like for like.

Method (this machine is shared and noisy, so only paired ratios mean anything):
- every runner is a fresh process doing the same thing: load, one warm-up, then `-r` measured
  repetitions; its figure is the median over repetitions (llama-bench: median of samples_ts).
  Engine runs through `finllm-edge bench`, fe-bench as itself, llama-bench as three single-test
  runs (`-p N -n 0`, `-p 0 -n N -d N`, `-pg N,N`). (Not one multi-test llama-bench run:
  measured here, its later tests run about 2-3% faster than the same test alone, as the process
  is warmer.)
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
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from finllm_edge.models import default_model_path
from finllm_edge.native.build import heavy_lock
from finllm_edge.paths import cache_dir

TARGET = 0.98  # issue 14: Engine and fe-bench decode and prefill >= 0.98 x llama-bench of the same build
VARIANTS = {"host": "x86-64-avx2", "host-avx512": "x86-64-avx512-vnni"}


def find_tools(build: bool, target: str = "host") -> dict[str, Path | None]:
    info = None
    try:
        from finllm_edge.native import build as nb

        info = nb.ensure_built(target) if build else nb.existing_build(target)
    except Exception as exc:  # the native build driver is another module; fall back to the cache layout
        print(f"[overhead] native build driver unavailable ({exc}); looking in the cache", file=sys.stderr)
    tools: dict[str, Path | None] = {"llama-bench": None, "llama-quantize": None, "fe-bench": None}
    if info is not None:
        tools.update({"llama-bench": info.tools.get("llama-bench"), "llama-quantize": info.tools.get("llama-quantize"),
                      "fe-bench": info.fe_bench})
    cache = cache_dir()
    for name in ("llama-bench", "llama-quantize"):
        if tools[name] is None or not tools[name].exists():
            tools[name] = next(iter(sorted(cache.glob(f"llama/{target}-[0-9a-f]*/prefix/bin/{name}"))), None)
    if tools["fe-bench"] is None or not tools["fe-bench"].exists():
        tools["fe-bench"] = next(iter(sorted(cache.glob(f"native/{target}-[0-9a-f]*/bin/fe-bench"))), None)
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
    """The Engine of the same CPU variant as the llama-bench/fe-bench it is compared with."""
    env = dict(os.environ, FINLLM_EDGE_VARIANT=VARIANTS[a.target])
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "bench.json"
        subprocess.run([sys.executable, "-m", "finllm_edge.lab.cli", "bench", str(model), "-t", str(a.threads),
                        "--n-prompt", str(a.n_prompt), "--n-gen", str(a.n_gen), "-r", str(a.repetitions),
                        "--warmup", "1", "-o", str(out), *(["--flash-attn"] if a.fa == "1" else [])],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        p = json.loads(out.read_text())["profiles"][0]
    return _figures(p)


def run_fe_bench(exe: Path, model: Path, a) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "p.json"
        subprocess.run([str(exe), "-m", str(model), "-t", str(a.threads), "-p", str(a.n_prompt), "-n", str(a.n_gen),
                        "-r", str(a.repetitions), "--warmup", "1", "--json-only", "-o", str(out), "-fa", a.fa],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        p = json.loads(out.read_text())
    return _figures(p)


def _figures(p: dict) -> dict:
    return {"pp": p["prefill_tok_s"], "tg": p["decode_tok_s"],
            "pp_best": p["prefill_tok_s_max"], "tg_best": p["decode_tok_s_max"]}


def _llama_bench_seconds(exe: Path, model: Path, a, test: list[str]) -> list[float]:
    """Seconds of each repetition of one llama-bench test."""
    from finllm_edge.lab.llama_bench import one_row

    return [float(x) / 1e9 for x in one_row(exe, model, a.threads, a.repetitions, "-fa", a.fa, *test)["samples_ns"]]


def run_llama_bench(exe: Path, model: Path, a) -> dict:
    """pp: prompt alone. tg: decode alone at depth N (`-d N`, restored KV state, no prefill right
    before). tg_req: decode right after its prompt, as in a request: `-pg N,N` time minus the
    prompt time. llama-bench reports pg as one figure; the decode part is derived here."""
    n, g = a.n_prompt, a.n_gen
    pp = _llama_bench_seconds(exe, model, a, ["-p", str(n), "-n", "0"])
    tg = _llama_bench_seconds(exe, model, a, ["-p", "0", "-n", str(g), "-d", str(n)])
    pg = _llama_bench_seconds(exe, model, a, ["-p", "0", "-n", "0", "-pg", f"{n},{g}"])
    med = statistics.median
    return {"pp": n / med(pp), "pp_best": n / min(pp), "tg": g / med(tg), "tg_best": g / min(tg),
            "tg_req": g / (med(pg) - med(pp)), "tg_req_best": g / (min(pg) - min(pp))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Engine vs fe-bench vs llama-bench (same tree, model, threads)")
    ap.add_argument("--model", type=Path, default=None, help="GGUF to use as is (default: SmolLM2 -> Q4_0)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--fa", choices=["0", "1"], default="0",
                    help="flash attention on every side: 0 (default) = off, the core's session default (finest "
                         "exact prefix reuse); 1 = on (llama-bench's own default on this CPU; the Engine and fe-bench "
                         "with fe_session_params.flash_attn)")
    ap.add_argument("--target", choices=sorted(VARIANTS), default="host-avx512",
                    help="the build compared: its llama-bench, its fe-bench and the Engine on its variant "
                         "(default host-avx512, the variant the Engine picks on this CPU)")
    ap.add_argument("--n-prompt", type=int, default=64)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("-r", "--repetitions", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--build", action="store_true", help="build the native host target if missing")
    ap.add_argument("-o", "--output", type=Path, default=Path("out/bench/runtime_overhead.json"))
    ap.add_argument("--no-lock", action="store_true")
    a = ap.parse_args(argv)
    tools = find_tools(a.build, a.target)
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
    lb = samples["llama-bench"]
    # (our key, llama-bench key): prefill vs prompt alone; decode vs decode after a prompt (the
    # target's reference, same work as ours) and vs llama-bench's decode alone (shown too).
    pairs = {"pp": ("pp", "pp"), "tg_req": ("tg", "tg_req"), "tg_alone": ("tg", "tg"),
             "pp_best": ("pp_best", "pp_best"), "tg_req_best": ("tg_best", "tg_req_best"),
             "tg_alone_best": ("tg_best", "tg_best")}
    paired = {name: {k: [s[ours] / r[ref] for s, r in zip(runs, lb)] for k, (ours, ref) in pairs.items()}
              for name, runs in samples.items() if runs and name != "llama-bench"}
    ratios = {name: {k: statistics.median(v) for k, v in p.items()} for name, p in paired.items()}
    ranges = {name: {k: [min(v), max(v)] for k, v in p.items()} for name, p in paired.items()}
    meets = {name: r["tg_req"] >= TARGET and r["pp"] >= TARGET for name, r in ratios.items()}
    doc = {"model": str(model), "target": a.target, "variant": VARIANTS[a.target], "llama_bench_fa": a.fa,
           "threads": a.threads,
           "n_prompt": a.n_prompt, "n_gen": a.n_gen,
           "repetitions": a.repetitions, "rounds": a.rounds, "median_tok_s": med,
           "ratio_vs_llama_bench": ratios, "ratio_range": ranges, "samples": samples,
           "target_decode_ratio": TARGET, "target_reference": "llama-bench decode after the prompt (-pg minus -p)",
           "meets_target": meets, "fe_bench_built": tools["fe-bench"] is not None}
    print(f"\n{VARIANTS[a.target]} build, llama-bench -fa {a.fa}: {model.name}, {a.threads} threads, "
          f"pp{a.n_prompt} + tg{a.n_gen}, "
          f"{a.rounds} interleaved rounds x {a.repetitions} reps, fresh process per run")
    print("ratio = median over rounds of (runner / llama-bench within the round) [min-max over rounds]")
    print("llama-bench decode references: 'after prompt' = (-pg N,N time - -p N time), the same sequence as a "
          "request and the target's reference; 'alone' = -n N -d N (restored KV state, no prefill just before)")
    for label, sfx in (("median repetition", ""), ("best repetition", "_best")):
        print(f"-- tok/s of the {label} of each run --")
        print(f"{'runner':12} {'prefill':>8} {'decode':>8} {'pp ratio':>22} {'tg ratio (after prompt)':>24} "
              f"{'tg ratio (alone)':>22}")
        for name, m in med.items():
            if name == "llama-bench":
                print(f"{name:12} {m['pp' + sfx]:8.1f} {m['tg_req' + sfx]:8.1f} {'1':>22} {'1':>24} "
                      f"{'alone: %.1f' % m['tg' + sfx]:>22}")
                continue
            cells = [f"{ratios[name][k + sfx]:.3f} [{ranges[name][k + sfx][0]:.3f}-{ranges[name][k + sfx][1]:.3f}]"
                     for k in ("pp", "tg_req", "tg_alone")]
            print(f"{name:12} {m['pp' + sfx]:8.1f} {m['tg' + sfx]:8.1f} {cells[0]:>22} {cells[1]:>24} {cells[2]:>22}")
    print("(interference from other jobs only ever slows a repetition down, so the best repetition is the "
          "least disturbed estimate of each runner's own speed; the target is checked on the median)")
    for name, ok in meets.items():
        print(f"{name}: decode / llama-bench decode after the prompt = {ratios[name]['tg_req']:.3f}, prefill "
              f"{ratios[name]['pp']:.3f} -> {'meets' if ok else 'MISSES'} the {TARGET} target "
              f"(decode vs decode alone: {ratios[name]['tg_alone']:.3f})")
    print(json.dumps(doc, indent=2))
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
