"""Runtime LoRA adapters against merged models, side by side in one run.

Inputs: the output folder of `finllm-edge convert --adapter-gguf` (default out/convert-adapters):
model-<q>.gguf (the adapter merged before quantizing), base-<q>.gguf (the base alone, same quant)
and adapter-f16.gguf (the runtime adapter). Make it with

    finllm-edge convert --adapter-gguf --quant q4_0,q4_k_m --out out/convert-adapters

Three measurements, every one in a fresh worker process, the two sides alternating (A,B then B,A in
the next round), medians over rounds of per-round ratios:

1. speed   - fe_benchmark (prefill n_prompt + greedy decode n_gen, the core's loop): base-<q> with the
             adapter active vs model-<q> (merged). Ratio adapter / merged for prefill and decode tok/s.
2. swap    - one process with the base and two adapters loaded: time of set_adapters(other) and the TTFT
             of the next request (its prompt evaluated from scratch: a swap empties the KV cache), vs the
             alternative with merged models: loading another merged model file (Engine load) and the
             same request's TTFT.
3. memory  - peak RSS of one process holding one base + N adapters (one active, each used for one
             request) vs one process holding N merged models (N Engines, each used for one request),
             N = 1, 2, 4. Adapters 2..N are random LoRAs with the shipped adapter's names and shapes
             (memory depends on sizes only); merged models 2..N are copies of model-<q>.gguf in other
             files (their pages are not shared, as N different merged models would not be).

Prints JSON (also written to --out) and a readable table. Quote ratios, not absolute times: the
machine is shared.

    flock /tmp/fe-bench.lock python benchmarks/bench_adapters.py [--convert-out DIR] [--quant q4_0]
        [--rounds 3] [--threads 2] [--out out/bench/adapters]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = ("Summarize the credit risk of a regional bank whose commercial real estate loans grew 18% while "
          "its deposits fell 4% and its CET1 ratio is 10.2%.")


# ---------------------------------------------------------------- workers (one process each)

def _engine(path: str, threads: int):
    from finllm_edge.engine import Engine

    return Engine(path, n_ctx=512, n_threads=threads)


def _ttft(engine, prompt: str = PROMPT, n: int = 8) -> float:
    t0 = time.perf_counter()
    s = engine.generate(prompt, max_tokens=n)
    first = None
    for _ in s:
        if first is None:
            first = time.perf_counter() - t0
    return 1e3 * (first if first is not None else time.perf_counter() - t0)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def worker(a: argparse.Namespace) -> dict:
    if a.scenario == "speed":
        e = _engine(a.model, a.threads)
        if a.adapter:
            e.set_adapters(e.load_adapter(a.adapter))
        p = e.benchmark(n_prompt=a.n_prompt, n_gen=a.n_gen, repetitions=a.reps, warmup=1)
        return {"prefill_tok_s": p["prefill_tok_s"], "decode_tok_s": p["decode_tok_s"]}
    if a.scenario == "swap_adapter":
        e = _engine(a.model, a.threads)
        first, other = e.load_adapter(a.adapter), e.load_adapter(a.adapters[0])
        e.set_adapters(first)
        _ttft(e)
        t0 = time.perf_counter()
        e.set_adapters(other)
        swap_ms = 1e3 * (time.perf_counter() - t0)
        return {"switch_ms": swap_ms, "ttft_after_ms": _ttft(e), "load_adapter_ms": other.info.load_ms}
    if a.scenario == "swap_merged":
        e = _engine(a.model, a.threads)
        _ttft(e)
        t0 = time.perf_counter()
        e.close()
        e2 = _engine(a.adapters[0], a.threads)
        switch_ms = 1e3 * (time.perf_counter() - t0)
        return {"switch_ms": switch_ms, "ttft_after_ms": _ttft(e2)}
    if a.scenario == "mem_adapters":
        e = _engine(a.model, a.threads)
        for path in a.adapters:
            e.set_adapters(e.load_adapter(path))
            _ttft(e, n=2)
        return {"peak_rss_mb": _peak_rss_mb()}
    if a.scenario == "mem_merged":
        engines = []
        for path in a.adapters:
            engines.append(_engine(path, a.threads))
            _ttft(engines[-1], n=2)
        return {"peak_rss_mb": _peak_rss_mb()}
    raise SystemExit(f"unknown scenario {a.scenario}")


def run_worker(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", *[str(x) for x in args]], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- inputs

def extra_adapters(real: Path, n: int, folder: Path) -> list[Path]:
    """n - 1 random adapters with the real one's tensor names and shapes (F16), written next to it."""
    import gguf
    import numpy as np

    r = gguf.GGUFReader(real)
    arch = r.fields["general.architecture"].contents()
    out = [real]
    for k in range(1, n):
        rng = np.random.default_rng(k)
        path = folder / f"adapter-random-{k}.gguf"
        w = gguf.GGUFWriter(path, arch)
        w.add_type("adapter")
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", 0.0)
        for t in r.tensors:
            shape = tuple(int(x) for x in reversed(t.shape))      # numpy order
            w.add_tensor(t.name, (0.01 * rng.standard_normal(shape)).astype(np.float16))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        out.append(path)
    return out


def merged_copies(merged: Path, n: int, folder: Path) -> list[Path]:
    out = [merged]
    for k in range(1, n):
        dst = folder / f"merged-copy-{k}.gguf"
        shutil.copyfile(merged, dst)
        out.append(dst)
    return out


# ---------------------------------------------------------------- driver

def _median_ratio(pairs: list[tuple[float, float]]) -> float:
    return statistics.median(x / y for x, y in pairs if y)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--convert-out", type=Path, default=Path("out/convert-adapters"))
    ap.add_argument("--quant", default="q4_0", help="comma list of quants present in --convert-out (default q4_0)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-prompt", type=int, default=64)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--counts", default="1,2,4", help="N for the memory comparison (default 1,2,4)")
    ap.add_argument("--out", type=Path, default=Path("out/bench/adapters"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scenario", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--adapter", help=argparse.SUPPRESS)
    ap.add_argument("--adapters", nargs="*", default=[], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a)))
        return 0

    src = a.convert_out
    adapter = src / "adapter-f16.gguf"
    if not adapter.exists():
        raise SystemExit(f"{adapter} not found: run `finllm-edge convert --adapter-gguf --quant q4_0,q4_k_m --out "
                         f"{src}` first")
    counts = [int(x) for x in a.counts.split(",")]
    common = ["--threads", a.threads, "--n-prompt", a.n_prompt, "--n-gen", a.n_gen, "--reps", a.reps]
    result: dict = {"convert_out": str(src), "threads": a.threads, "rounds": a.rounds, "quants": {}}
    with tempfile.TemporaryDirectory(dir=src) as tmp:
        tmp = Path(tmp)
        adapters = extra_adapters(adapter, max(counts), tmp)
        for q in [x.strip() for x in a.quant.split(",") if x.strip()]:
            base, merged = src / f"base-{q}.gguf", src / f"model-{q}.gguf"
            for p in (base, merged):
                if not p.exists():
                    raise SystemExit(f"{p} not found (convert with --quant {q} --adapter-gguf)")
            copies = merged_copies(merged, max(counts), tmp)
            r = {"speed": {"adapter": [], "merged": []}, "swap": {"adapter": [], "merged": []},
                 "memory": {str(n): {"adapters": [], "merged": []} for n in counts}}
            for rnd in range(a.rounds):
                order = ("adapter", "merged") if rnd % 2 == 0 else ("merged", "adapter")
                print(f"[adapters] {q} round {rnd + 1}/{a.rounds}", file=sys.stderr, flush=True)
                for side in order:
                    if side == "adapter":
                        r["speed"][side].append(run_worker(["--scenario", "speed", "--model", base, "--adapter",
                                                            adapter, *common]))
                        r["swap"][side].append(run_worker(["--scenario", "swap_adapter", "--model", base,
                                                           "--adapter", adapter, "--adapters", adapters[1], *common]))
                    else:
                        r["speed"][side].append(run_worker(["--scenario", "speed", "--model", merged, *common]))
                        r["swap"][side].append(run_worker(["--scenario", "swap_merged", "--model", merged,
                                                           "--adapters", copies[1], *common]))
                for n in counts:
                    for side in (("adapters", "merged") if rnd % 2 == 0 else ("merged", "adapters")):
                        if side == "adapters":
                            args = ["--scenario", "mem_adapters", "--model", base, "--adapters", *adapters[:n]]
                        else:
                            args = ["--scenario", "mem_merged", "--adapters", *copies[:n]]
                        r["memory"][str(n)][side].append(run_worker([*args, *common]))
            result["quants"][q] = summarize(r, base, merged, adapter)
            result["quants"][q]["raw"] = r
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_adapters.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({q: {k: v for k, v in s.items() if k != "raw"} for q, s in result["quants"].items()}, indent=2))
    print(table(result))
    return 0


def summarize(r: dict, base: Path, merged: Path, adapter: Path) -> dict:
    sp, sw = r["speed"], r["swap"]
    med = statistics.median
    out = {
        "files_mib": {"base": base.stat().st_size / 2**20, "merged": merged.stat().st_size / 2**20,
                      "adapter": adapter.stat().st_size / 2**20},
        "prefill_tok_s": {"adapter": med(x["prefill_tok_s"] for x in sp["adapter"]),
                          "merged": med(x["prefill_tok_s"] for x in sp["merged"])},
        "decode_tok_s": {"adapter": med(x["decode_tok_s"] for x in sp["adapter"]),
                         "merged": med(x["decode_tok_s"] for x in sp["merged"])},
        "prefill_ratio": _median_ratio([(x["prefill_tok_s"], y["prefill_tok_s"])
                                        for x, y in zip(sp["adapter"], sp["merged"])]),
        "decode_ratio": _median_ratio([(x["decode_tok_s"], y["decode_tok_s"])
                                       for x, y in zip(sp["adapter"], sp["merged"])]),
        "swap": {"adapter_switch_ms": med(x["switch_ms"] for x in sw["adapter"]),
                 "adapter_ttft_after_ms": med(x["ttft_after_ms"] for x in sw["adapter"]),
                 "load_adapter_ms": med(x["load_adapter_ms"] for x in sw["adapter"]),
                 "merged_switch_ms": med(x["switch_ms"] for x in sw["merged"]),
                 "merged_ttft_after_ms": med(x["ttft_after_ms"] for x in sw["merged"])},
        "memory_peak_rss_mb": {n: {"one_base_n_adapters": med(x["peak_rss_mb"] for x in m["adapters"]),
                                   "n_merged_models": med(x["peak_rss_mb"] for x in m["merged"])}
                               for n, m in r["memory"].items()},
    }
    out["swap"]["switch_ratio_merged_over_adapter"] = _median_ratio(
        [(y["switch_ms"], x["switch_ms"]) for x, y in zip(sw["adapter"], sw["merged"])])
    return out


def table(result: dict) -> str:
    lines = []
    for q, s in result["quants"].items():
        f = s["files_mib"]
        lines += [f"\n## {q}: base {f['base']:.1f} MiB + adapter {f['adapter']:.1f} MiB vs merged "
                  f"{f['merged']:.1f} MiB ({result['threads']} threads, {result['rounds']} rounds, medians)", "",
                  "| measure | base + runtime adapter | merged | ratio (adapter / merged) |", "|---|---|---|---|",
                  f"| prefill tok/s | {s['prefill_tok_s']['adapter']:.1f} | {s['prefill_tok_s']['merged']:.1f} | "
                  f"{s['prefill_ratio']:.3f} |",
                  f"| decode tok/s | {s['decode_tok_s']['adapter']:.1f} | {s['decode_tok_s']['merged']:.1f} | "
                  f"{s['decode_ratio']:.3f} |",
                  f"| switch domain (ms): set_adapters vs load another merged model | "
                  f"{s['swap']['adapter_switch_ms']:.2f} | {s['swap']['merged_switch_ms']:.1f} | "
                  f"1/{s['swap']['switch_ratio_merged_over_adapter']:.0f} |",
                  f"| TTFT of the first request after the switch (ms) | {s['swap']['adapter_ttft_after_ms']:.1f} | "
                  f"{s['swap']['merged_ttft_after_ms']:.1f} | "
                  f"{s['swap']['adapter_ttft_after_ms'] / s['swap']['merged_ttft_after_ms']:.3f} |",
                  f"| load one adapter (ms) | {s['swap']['load_adapter_ms']:.1f} | - | - |"]
        for n, m in s["memory_peak_rss_mb"].items():
            lines.append(f"| peak RSS, N = {n} (MiB): 1 base + {n} adapters vs {n} merged models | "
                         f"{m['one_base_n_adapters']:.0f} | {m['n_merged_models']:.0f} | "
                         f"{m['one_base_n_adapters'] / m['n_merged_models']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
