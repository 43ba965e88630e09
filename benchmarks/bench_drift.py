"""Drift monitoring: false alarms on in-domain text, detection delay on three shifts, and the
monitor's cost on prefill and decode (issue 17).

1. reference  - the tuning text: 3,000 generated finance requests (finllm_edge/lab/drift_corpora.py,
                seed 1), made into a reference exactly as `finllm-edge convert --drift-ref` does
                (finllm_edge/drift_build.py: 5-fold cross-fitted windows, thresholds at false-alarm
                rates 0.05 (watch) / 0.01 (drift)), window 2,048 tokens, SmolLM2's tokenizer.
   shipped    - the same for the shipped adapter: reference from convert/data/finance_train.txt (what
                it was tuned on), stream from convert/data/finance_eval.txt (finance text it never saw).
2. in-domain  - a new stream of finance requests (other seeds) through the core's monitor: the
                share of >= 10,000 evaluated windows at WATCH or DRIFT, against the calibrated rates.
3. shifts     - against both references: after 200 in-domain requests the users switch to another
                domain (cooking), a new finance sub-domain with its own vocabulary (crypto / DeFi) or another language
                (Spanish finance), all of their requests (100%) or 30% of them: requests and
                prompt tokens from the switch until the state first reaches DRIFT (and WATCH);
                median and max over 20 seeds.
4. overhead   - the same Engine with and without the monitor attached, interleaved rounds in
                rotating order (prefix reuse off, so every request prefills): prefill and decode
                tok/s, median of per-round ratios; and the monitor's own time per request
                (fe_drift_observe through ctypes) as a share of the request's prefill time.
   scheduler  - the same on the core's Scheduler (8th session): one round = 16 requests from 4
                client threads at once, with and without Scheduler.enable_drift (rotating order);
                generated tok/s of the round, median of per-round ratios (--sched-rounds; 0 skips).

    flock /tmp/fe-bench.lock python benchmarks/bench_drift.py [--out out/bench/drift] [--rounds 20]
    flock /tmp/fe-bench.lock python benchmarks/bench_drift.py --overhead-only --rounds 40 --overhead-gen 64 --threads 1
    flock /tmp/fe-bench.lock python benchmarks/bench_drift.py --overhead-only --rounds 0 --sched-rounds 10 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finllm_edge import Engine, Scheduler  # noqa: E402
from finllm_edge.drift import DriftMonitor, DriftParams  # noqa: E402
from finllm_edge.drift_build import make_reference, paragraphs, request_chunks  # noqa: E402
from finllm_edge.lab import drift_corpora as corpora  # noqa: E402
from finllm_edge.models import default_model_path  # noqa: E402

WATCH_RATE, DRIFT_RATE = 0.05, 0.01


def in_domain(ref, streams: list[list[list[int]]]) -> dict:
    n_eval = n_watch = n_drift = 0
    for toks in streams:
        m = DriftMonitor(ref)
        for t in toks:
            m.observe(t)
        s = m.status()
        n_eval, n_watch, n_drift = n_eval + s.n_evaluations, n_watch + s.n_watch, n_drift + s.n_drift
    return {"windows": n_eval, "watch_or_drift": n_watch, "drift": n_drift,
            "watch_rate": n_watch / n_eval, "drift_rate": n_drift / n_eval}


def delays(ref, fin: list[list[int]], new: list[list[int]], share: float, seeds: range, warm: int = 200,
           horizon: int = 600) -> dict:
    """Requests drawn (seeded) from tokenized pools: `warm` in-domain ones, then each request is from the
    shifted pool with probability `share`, up to `horizon` requests after the switch."""
    out = {"drift_requests": [], "drift_tokens": [], "watch_requests": [], "watch_tokens": [], "missed": 0,
           "alarm_before_switch": 0}
    for seed in seeds:
        rng = np.random.default_rng(1000 + seed)
        m = DriftMonitor(ref)
        for i in rng.integers(0, len(fin), warm):
            m.observe(fin[i])
        out["alarm_before_switch"] += m.status().n_watch > 0
        base_req, base_tok = m.status().n_requests, m.status().n_tokens
        watch = None
        for _ in range(horizon):
            pool = new if rng.random() < share else fin
            s = m.observe(pool[rng.integers(0, len(pool))])
            if watch is None and s.state != "none":
                watch = (s.n_requests - base_req, s.n_tokens - base_tok)
            if s.state == "drift":
                out["drift_requests"].append(s.n_requests - base_req)
                out["drift_tokens"].append(s.n_tokens - base_tok)
                out["watch_requests"].append(watch[0])
                out["watch_tokens"].append(watch[1])
                break
        else:
            out["missed"] += 1
    summary = {"seeds": len(seeds), "missed": out["missed"], "alarm_before_switch": out["alarm_before_switch"]}
    for k in ("drift_requests", "drift_tokens", "watch_requests", "watch_tokens"):
        v = out[k]
        summary[k] = {"median": float(np.median(v)) if v else None, "max": int(max(v)) if v else None}
    return summary


def median_ci(values: list[float], samples: int = 2000) -> list[float]:
    """95% percentile-bootstrap interval of the median (seed 0)."""
    v = np.asarray(values)
    idx = np.random.default_rng(0).integers(0, len(v), size=(samples, len(v)))
    meds = np.median(v[idx], axis=1)
    return [float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))]


def overhead(engine, ref_path: Path, rounds: int, n_prompt: int = 128, n_gen: int = 16) -> dict:
    texts = corpora.requests("finance", 400, seed=77)
    prompts = []
    for i in range(0, 400, 4):
        toks = engine.tokenize(" ".join(texts[i:i + 4]))
        if len(toks) >= n_prompt:
            prompts.append(toks[:n_prompt])
    ratios = {"prefill": [], "decode": []}
    raw = {"on": {"prefill": [], "decode": []}, "off": {"prefill": [], "decode": []}}
    for r in range(rounds):
        order = ("on", "off") if r % 2 == 0 else ("off", "on")
        got = {}
        for side in order:  # one request each side per round, same prompt
            engine.enable_drift(ref_path if side == "on" else None)
            "".join(engine.generate_tokens(prompts[r % len(prompts)], max_tokens=n_gen, ignore_eos=True))
            prof = engine.last_profile
            got[side] = (prof["prefill_tok_s"], prof["decode_tok_s"])
            raw[side]["prefill"].append(got[side][0])
            raw[side]["decode"].append(got[side][1])
        ratios["prefill"].append(got["on"][0] / got["off"][0])
        ratios["decode"].append(got["on"][1] / got["off"][1])
    engine.enable_drift(None)
    # the monitor's own cost per request: fe_drift_observe of a n_prompt-token request (ctypes included)
    from finllm_edge.drift import DriftReference

    m = DriftMonitor(DriftReference.load(ref_path))
    t0 = time.perf_counter()
    n = 20000
    for i in range(n):
        m.observe(prompts[i % len(prompts)])
    per_req_ms = (time.perf_counter() - t0) * 1e3 / n
    prefill_ms = 1e3 * n_prompt / statistics.median(raw["off"]["prefill"])
    return {"rounds": rounds, "n_prompt": n_prompt, "n_gen": n_gen,
            "prefill_ratio_median": statistics.median(ratios["prefill"]),
            "decode_ratio_median": statistics.median(ratios["decode"]),
            "prefill_ratio_q25_q75": [float(np.percentile(ratios["prefill"], q)) for q in (25, 75)],
            "decode_ratio_q25_q75": [float(np.percentile(ratios["decode"], q)) for q in (25, 75)],
            "prefill_ratio_ci95": median_ci(ratios["prefill"]), "decode_ratio_ci95": median_ci(ratios["decode"]),
            "observe_ms_per_request": per_req_ms, "prefill_ms_per_request": prefill_ms,
            "observe_share_of_prefill": per_req_ms / prefill_ms,
            "prefill_tok_s": {s: statistics.median(raw[s]["prefill"]) for s in raw},
            "decode_tok_s": {s: statistics.median(raw[s]["decode"]) for s in raw}}


def sched_overhead(model: Path, ref_path: Path, rounds: int, threads: int, n_gen: int = 16) -> dict:
    """Generated tok/s of 16 concurrent requests (4 client threads) with / without the monitor."""
    texts = corpora.requests("finance", 200, seed=78)
    system = [{"role": "system", "content": "You are a concise finance assistant."}]
    ratios, raw = [], {"on": [], "off": []}
    with Scheduler(model, n_slots=4, n_ctx=512, n_threads=threads, prefix_reuse=False) as sched:
        def one_round(r: int) -> float:
            qs = texts[(16 * r) % 192:(16 * r) % 192 + 16]
            t0 = time.perf_counter()

            def client(mine):
                for q in mine:
                    "".join(sched.chat(system + [{"role": "user", "content": q}], max_tokens=n_gen, ignore_eos=True))

            ts = [threading.Thread(target=client, args=(qs[k::4],)) for k in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            return len(qs) * n_gen / (time.perf_counter() - t0)

        one_round(0)  # warm-up
        for r in range(rounds):
            got = {}
            for side in (("on", "off") if r % 2 == 0 else ("off", "on")):
                sched.enable_drift(ref_path if side == "on" else None)
                got[side] = one_round(r)
                raw[side].append(got[side])
            ratios.append(got["on"] / got["off"])
        sched.enable_drift(None)
    return {"rounds": rounds, "requests_per_round": 16, "clients": 4, "n_gen": n_gen,
            "tok_s_ratio_median": statistics.median(ratios), "tok_s_ratio_ci95": median_ci(ratios),
            "tok_s": {k: statistics.median(v) for k, v in raw.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "drift")
    ap.add_argument("--rounds", type=int, default=20, help="overhead rounds (default 20)")
    ap.add_argument("--stream-requests", type=int, default=12000, help="in-domain requests per stream (default 12000)")
    ap.add_argument("--seeds", type=int, default=20, help="shift runs per kind (default 20)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-overhead", action="store_true", help="only the detection figures (parts 1-3: counts, no "
                    "timing; they need no benchmark lock)")
    ap.add_argument("--overhead-only", action="store_true", help="only part 4 (the reference of part 1 is built "
                    "for it; the detection figures are skipped)")
    ap.add_argument("--overhead-gen", type=int, default=16, help="tokens generated per overhead request (default 16)")
    ap.add_argument("--sched-rounds", type=int, default=0,
                    help="rounds of the scheduler overhead (16 requests, 4 clients, with/without the monitor; "
                         "default 0: skipped)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    res: dict = {"model": str(args.model or default_model_path()), "watch_rate": WATCH_RATE, "drift_rate": DRIFT_RATE}
    t0 = time.perf_counter()
    with Engine(args.model or default_model_path(), n_ctx=512, n_threads=args.threads, prefix_reuse=False) as e:
        params = DriftParams(window_tokens=2048)
        ref, summary = make_reference(e, corpora.text("finance", 3000, seed=1), params=params,
                                      watch_rate=WATCH_RATE, drift_rate=DRIFT_RATE)
        ref_path = args.out / "drift-ref.fedrift"
        ref.save(ref_path)
        res["reference"] = {"n_tokens": summary.n_tokens, "n_lines": summary.n_lines, **summary.info,
                            "heldout_kl_quantiles": summary.heldout_kl_quantiles}
        print(f"reference: {summary.n_tokens} tokens; thresholds watch {summary.info['watch_threshold']:.4f} "
              f"drift {summary.info['drift_threshold']:.4f} ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
        if args.overhead_only:
            if args.rounds > 0:
                res["overhead"] = overhead(e, ref_path, args.rounds, n_gen=args.overhead_gen)
                print(overhead_line(res["overhead"]))
            if args.sched_rounds > 0:
                res["sched_overhead"] = sched_overhead(args.model or default_model_path(), ref_path,
                                                       args.sched_rounds, args.threads, args.overhead_gen)
                print(sched_line(res["sched_overhead"]))
            res["seconds"] = round(time.perf_counter() - t0, 1)
            (args.out / "bench_drift_overhead.json").write_text(json.dumps(res, indent=2) + "\n")
            print(json.dumps(res, indent=2))
            return 0
        streams = [[e.tokenize(r, add_special=False) for r in corpora.requests("finance", args.stream_requests, s)]
                   for s in (2, 3)]
        res["in_domain"] = in_domain(ref, streams)
        print(f"in-domain: {res['in_domain']}", file=sys.stderr)
        # the shipped adapter: its own tuning text vs finance text it never saw
        shipped = ROOT / "convert" / "data"
        sref, ssum = make_reference(e, (shipped / "finance_train.txt").read_text(), params=params,
                                    watch_rate=WATCH_RATE, drift_rate=DRIFT_RATE)
        evs = [c for p in paragraphs((shipped / "finance_eval.txt").read_text())
               for c in request_chunks(e.tokenize(p, add_special=False))]
        rng = np.random.default_rng(5)
        boot = [[evs[i] for i in rng.integers(0, len(evs), 12000)]]
        res["shipped"] = {"n_ref_tokens": ssum.n_tokens, "eval_sentences": len(evs),
                          "watch_threshold": ssum.info["watch_threshold"],
                          "drift_threshold": ssum.info["drift_threshold"], **in_domain(sref, boot)}
        print(f"shipped: {res['shipped']}", file=sys.stderr)
        res["shifts"] = {}
        fin = [e.tokenize(r, add_special=False) for r in corpora.requests("finance", 3000, seed=4)]
        for kind in ("cooking", "crypto", "spanish"):
            new = [e.tokenize(r, add_special=False) for r in corpora.requests(kind, 2000, seed=4)]
            for share in (1.0, 0.3):
                key = f"{kind}@{int(share * 100)}%"
                res["shifts"][key] = {"kind": corpora.SHIFTS[kind], "share": share,
                                      **delays(ref, fin, new, share, range(args.seeds))}
                # the same shift against the shipped adapter's reference (in-domain = finance_eval.txt)
                res["shifts"][f"shipped {key}"] = {"kind": corpora.SHIFTS[kind] + " vs the shipped adapter",
                                                   "share": share, **delays(sref, evs, new, share, range(args.seeds))}
                print(f"{key}: {res['shifts'][key]}", file=sys.stderr)
        if not args.no_overhead:
            res["overhead"] = overhead(e, ref_path, args.rounds, n_gen=args.overhead_gen)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    (args.out / "bench_drift.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    print(table(res))
    return 0


def table(res: dict) -> str:
    r, d = res["reference"], res["in_domain"]
    s = res["shipped"]
    lines = [f"reference: {r['n_tokens']} tokens of generated finance requests, window {r['window_tokens']}, "
             f"thresholds watch {r['watch_threshold']:.4f} / drift {r['drift_threshold']:.4f} nats",
             "", "| stream | windows | at watch or drift | at drift |", "|---|---|---|---|",
             f"| in-domain finance (new seeds) | {d['windows']:,} | {d['watch_rate']:.2%} (calibrated "
             f"{WATCH_RATE:.0%}) | {d['drift_rate']:.2%} (calibrated {DRIFT_RATE:.0%}) |",
             f"| shipped adapter: finance_eval.txt vs finance_train.txt | {s['windows']:,} | "
             f"{s['watch_rate']:.2%} | {s['drift_rate']:.2%} |",
             "", "| shift (after 200 in-domain requests) | share | to DRIFT: requests (median / max) | tokens "
             "(median / max) | to WATCH: requests (median) | missed |", "|---|---|---|---|---|---|"]
    for v in res["shifts"].values():
        dr, dt, wr = v["drift_requests"], v["drift_tokens"], v["watch_requests"]
        lines.append(f"| {v['kind']} | {v['share']:.0%} | {dr['median']} / {dr['max']} | {dt['median']} / "
                     f"{dt['max']} | {wr['median']} | {v['missed']}/{v['seeds']} |")
    if "overhead" not in res:
        return "\n".join(lines)
    return "\n".join(lines + ["", overhead_line(res["overhead"])])


def sched_line(o: dict) -> str:
    ci = o["tok_s_ratio_ci95"]
    return (f"scheduler ({o['rounds']} interleaved rounds of {o['requests_per_round']} requests from {o['clients']} "
            f"clients, {o['n_gen']} tokens each): generated tok/s with/without the monitor "
            f"{o['tok_s_ratio_median']:.4f} (median 95% CI {ci[0]:.4f}..{ci[1]:.4f}; {o['tok_s']['on']:.1f} vs "
            f"{o['tok_s']['off']:.1f} tok/s)")


def overhead_line(o: dict) -> str:
    pq, dq = o["prefill_ratio_q25_q75"], o["decode_ratio_q25_q75"]
    ci = "".join(f"; {k} median 95% CI {o[k + '_ratio_ci95'][0]:.4f}..{o[k + '_ratio_ci95'][1]:.4f}"
                 for k in ("prefill", "decode") if k + "_ratio_ci95" in o)
    return (f"overhead ({o['rounds']} interleaved rounds, {o['n_prompt']}-token prompts, {o['n_gen']} "
              f"generated): prefill tok/s with/without monitor {o['prefill_ratio_median']:.4f} (IQR {pq[0]:.3f}.."
              f"{pq[1]:.3f}), decode {o['decode_ratio_median']:.4f} (IQR {dq[0]:.3f}..{dq[1]:.3f}); the monitor's own "
              f"time {o['observe_ms_per_request'] * 1e3:.1f} us per request = {o['observe_share_of_prefill']:.4%} of "
              f"its prefill{ci}")


if __name__ == "__main__":
    sys.exit(main())
