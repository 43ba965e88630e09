"""Throughput of the core's scheduler (finllm_edge.Scheduler, in-process) at 1/2/4/8 concurrent
streams against the same requests run one after another on one Engine (the anchor), with the
inter-token and time-to-first-token latencies the server figures (bench_serve.py) sit on.

Each round runs every arm once, in a rotating order: `sequential` (one Engine, the requests in
turn) and `concurrency C` (a Scheduler with C slots, C client threads each submitting and reading
requests until the fixed set is done). Throughput = generated tokens / wall time of the arm;
ratio = arm / sequential of the same round (and / c1, the scheduler with one stream: the batching
gain on the same code path); the table quotes the median of the per-round ratios.
Greedy, ignore_eos (every request generates exactly --n-gen tokens), SmolLM2 Q4_0 by default.

    flock /tmp/fe-bench.lock python benchmarks/bench_scheduler.py --rounds 3 --requests 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

from finllm_edge.engine import Engine
from finllm_edge.models import default_model_path
from finllm_edge.paths import cache_dir
from finllm_edge.scheduler import Scheduler

QUESTIONS = [
    "What is a bond coupon?", "Explain EBITDA in one paragraph.", "What does a yield curve inversion signal?",
    "How is a stock split different from a dividend?", "What is duration risk?", "Define free cash flow.",
    "Why do central banks raise rates?", "What is a covenant in a loan agreement?",
]


def _model(arg: Path | None) -> Path:
    if arg:
        return arg
    q4 = cache_dir() / "bench-models" / "SmolLM2-135M-Instruct.Q4_0.gguf"
    if q4.exists():
        return q4
    print("[sched] no Q4_0 bench model (benchmarks/bench_runtime_overhead.py makes it); using the default model",
          file=sys.stderr)
    return default_model_path()


def _prompts(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + f" (case {i})"}] for i in range(n)]


def run_sequential(eng: Engine, prompts: list, n_gen: int) -> dict:
    t0 = time.perf_counter()
    toks, itl, ttft = 0, [], []
    for msgs in prompts:
        s = eng.chat(msgs, n_gen, ignore_eos=True)
        for _ in s:
            pass
        p = s.profile
        toks += len(s.tokens)
        itl += p.get("token_ms") or []
        ttft.append(p["ttft_ms"])
    wall = time.perf_counter() - t0
    return _figures(toks, wall, itl, ttft)


def run_concurrent(sched: Scheduler, prompts: list, n_gen: int, clients: int) -> dict:
    todo = list(prompts)
    lock = threading.Lock()
    toks, itl, ttft = [0], [], []
    peak = [0]

    def client():
        while True:
            with lock:
                if not todo:
                    return
                msgs = todo.pop()
            s = sched.chat(msgs, n_gen, ignore_eos=True)
            for _ in s:
                pass
            p = s.profile
            with lock:
                toks[0] += len(s.tokens)
                itl.extend(p.get("token_ms") or [])
                ttft.append(p["ttft_ms"])
                peak[0] = max(peak[0], sched.stats()["active"])

    t0 = time.perf_counter()
    th = [threading.Thread(target=client) for _ in range(clients)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    wall = time.perf_counter() - t0
    out = _figures(toks[0], wall, itl, ttft)
    st = sched.stats()
    out["batch_size_end"] = st["batch_size"]
    out["peak_batch_size"] = st["peak_batch_size"]
    return out


def _pct(v: list[float], q: float) -> float:
    if not v:
        return 0.0
    v = sorted(v)
    k = (len(v) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def _figures(tokens: int, wall_s: float, itl: list[float], ttft: list[float]) -> dict:
    return {"tokens": tokens, "wall_s": wall_s, "tok_s": tokens / wall_s if wall_s > 0 else 0.0,
            "itl_p50_ms": _pct(itl, 50), "itl_p99_ms": _pct(itl, 99), "ttft_p50_ms": _pct(ttft, 50),
            "ttft_p99_ms": _pct(ttft, 99)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="GGUF (default: SmolLM2 Q4_0 of bench-models)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--concurrency", default="1,2,4,8")
    ap.add_argument("--requests", type=int, default=16, help="requests per arm and round")
    ap.add_argument("--n-gen", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--p99-token-ms", type=float, default=150.0)
    ap.add_argument("--flash-attn", action="store_true", help="flash attention on every arm (default off)")
    ap.add_argument("--prefix-reuse", action="store_true",
                    help="prefix reuse on every arm (default off: every request evaluates its whole prompt, so the "
                         "arms compare batching alone)")
    ap.add_argument("-o", "--output", type=Path, default=Path("out/bench/scheduler.json"))
    a = ap.parse_args(argv)
    model = _model(a.model)
    levels = [int(x) for x in a.concurrency.split(",")]
    prompts = _prompts(a.requests)
    arms = ["sequential"] + [f"c{c}" for c in levels]
    samples: dict[str, list[dict]] = {k: [] for k in arms}
    ratios: dict[str, list[float]] = {k: [] for k in arms[1:]}
    ratios_c1: dict[str, list[float]] = {k: [] for k in arms[1:]}  # batching gain alone (same code path)
    eng = Engine(model, n_ctx=512, n_threads=a.threads, prefix_reuse=a.prefix_reuse, flash_attn=a.flash_attn)
    scheds = {f"c{c}": Scheduler(model, n_slots=c, n_ctx=512, n_threads=a.threads, p99_token_ms=a.p99_token_ms,
                                 flash_attn=a.flash_attn, prefix_reuse=a.prefix_reuse)
              for c in levels}
    try:
        eng.complete("warm up", 4)
        for r in range(a.rounds):
            order = arms[r % len(arms):] + arms[: r % len(arms)]
            got = {}
            for arm in order:
                if arm == "sequential":
                    got[arm] = run_sequential(eng, prompts, a.n_gen)
                else:
                    got[arm] = run_concurrent(scheds[arm], prompts, a.n_gen, int(arm[1:]))
                samples[arm].append(got[arm])
                print(f"[sched] round {r + 1} {arm}: {got[arm]['tok_s']:.1f} tok/s", file=sys.stderr)
            for arm in arms[1:]:
                ratios[arm].append(got[arm]["tok_s"] / got["sequential"]["tok_s"])
                if "c1" in got:
                    ratios_c1[arm].append(got[arm]["tok_s"] / got["c1"]["tok_s"])
    finally:
        eng.close()
        for s in scheds.values():
            s.close()

    def med(arm: str, key: str) -> float:
        return statistics.median(x[key] for x in samples[arm])

    rows = []
    for arm in arms:
        rows.append({"arm": arm, "tok_s": med(arm, "tok_s"),
                     "ratio_vs_sequential": statistics.median(ratios[arm]) if arm in ratios else 1.0,
                     "ratio_vs_c1": statistics.median(ratios_c1[arm]) if ratios_c1.get(arm) else None,
                     "itl_p50_ms": med(arm, "itl_p50_ms"), "itl_p99_ms": med(arm, "itl_p99_ms"),
                     "ttft_p50_ms": med(arm, "ttft_p50_ms"), "ttft_p99_ms": med(arm, "ttft_p99_ms"),
                     "peak_batch_size": max((x.get("peak_batch_size", 1) for x in samples[arm]), default=1)})
    doc = {"model": str(model), "threads": a.threads, "flash_attn": a.flash_attn, "prefix_reuse": a.prefix_reuse,
           "requests": a.requests, "n_gen": a.n_gen, "rounds": a.rounds,
           "p99_token_ms": a.p99_token_ms, "rows": rows, "samples": samples, "ratios": ratios,
           "ratios_vs_c1": ratios_c1}
    print(f"{a.requests} chat requests x {a.n_gen} tokens (greedy, ignore_eos), {a.threads} threads, "
          f"{a.rounds} rounds, median of per-round ratios; model {model.name}")
    print(f"{'arm':<12} {'tok/s':>8} {'x seq':>7} {'x c1':>6} {'ITL p50':>9} {'ITL p99':>9} {'TTFT p50':>9} "
          f"{'TTFT p99':>9} {'batch':>6}")
    for r in rows:
        c1 = f"{r['ratio_vs_c1']:.2f}" if r["ratio_vs_c1"] is not None else "-"
        print(f"{r['arm']:<12} {r['tok_s']:>8.1f} {r['ratio_vs_sequential']:>7.2f} {c1:>6} {r['itl_p50_ms']:>9.1f} "
              f"{r['itl_p99_ms']:>9.1f} {r['ttft_p50_ms']:>9.0f} {r['ttft_p99_ms']:>9.0f} {r['peak_batch_size']:>6}")
    print(json.dumps({"rows": rows}, indent=2))
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
