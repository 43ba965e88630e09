"""`finllm-edge bench MODEL [MODEL...]`: warm-up + repetitions of prefill and greedy decode per model.

Prints a table and writes {"profiles": [LatencyProfile...], "estimates": [...]} as JSON.
With `--estimate DEVICE` (snapdragon-865, snapdragon-8-gen-2, raspberry-pi-5 or a device JSON)
each model also gets an ESTIMATE row for that device (finllm_edge.lab.latency_model), always
labelled as such, printed as a range with its calibration source and its measured error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finllm_edge.fileio import atomic_write_json

from .argtypes import non_negative_int, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="GGUF files (default: the embedded SmolLM2-135M-Instruct Q4_1)")
    parser.add_argument("-r", "--repetitions", type=positive_int, default=3, help="measured repetitions (default 3)")
    parser.add_argument("--warmup", type=non_negative_int, default=1, help="warm-up runs, not measured (default 1)")
    parser.add_argument("--n-prompt", "-pp", type=positive_int, default=64, help="prompt tokens (default 64)")
    parser.add_argument("--n-gen", "-tg", type=positive_int, default=64, help="generated tokens (default 64)")
    parser.add_argument("-t", "--threads", type=positive_int, default=None, help="threads (default: performance cores)")
    parser.add_argument("-fa", "--flash-attn", action="store_true",
                        help="llama.cpp's flash attention (GGUF only; off by default like the Engine's sessions; "
                             "llama-bench's default is on): faster prefill, coarser prefix reuse")
    parser.add_argument("-o", "--output", type=Path, default=Path("out/bench/bench.json"),
                        help="JSON output (default out/bench/bench.json)")
    parser.add_argument("--estimate", action="append", default=[], metavar="DEVICE",
                        help="add a latency estimate for DEVICE (repeatable); 'list' lists devices")


def format_table(profiles: list[dict], estimates: list[dict]) -> str:
    head = ("artifact", "kind", "thr", "TTFT ms", "pp tok/s", "tg tok/s", "p50 ms", "p90 ms", "p99 ms",
            "RSS MB", "bpw")
    rows = []
    for p in profiles:
        kind = "EMULATED" if p.get("emulated") else "measured"
        rows.append((Path(p["model_path"]).name, kind, str(p["n_threads"]), f"{p['ttft_ms']:.1f}",
                     f"{p['prefill_tok_s']:.1f}", f"{p['decode_tok_s']:.1f}", f"{p['token_ms_p50']:.2f}",
                     f"{p['token_ms_p90']:.2f}", f"{p['token_ms_p99']:.2f}", f"{p['peak_rss_mb']:.0f}",
                     f"{p['bits_per_weight']:.2f}"))
    for e in estimates:
        rows.append((Path(e["model_path"]).name, f"ESTIMATE {e['device']}", str(e["n_threads"]),
                     f"{e['ttft_ms']:.1f}", f"{e['prefill_tok_s']:.1f}", f"{e['decode_tok_s']:.1f}",
                     "-", "-", "-", "-", "-"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]

    def line(cells) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def cached_calibration():
    """The host calibration last written by benchmarks/bench_estimate.py, if any."""
    import json

    from finllm_edge.paths import cache_dir

    from .calibrate import HostCalibration

    f = cache_dir() / "kernel-bench" / "last_calibration.json"
    try:
        return HostCalibration.from_dict(json.loads(f.read_text()))
    except (OSError, ValueError, KeyError):
        return None


def format_estimate(e: dict) -> str:
    """The range, what dominates and why, the calibration source and the measured error of one estimate."""
    err = e["measured_error"]
    lo, hi = e["decode_tok_s_range"]
    return "\n".join([
        f"\nESTIMATE {Path(e['model_path']).name} on {e['device_name']}, {e['n_threads']} threads (not a measurement):",
        f"  TTFT ({e['n_prompt']} tokens) {e['ttft_ms_range'][0]:.0f}-{e['ttft_ms_range'][1]:.0f} ms, "
        f"prefill {e['prefill_tok_s_range'][0]:.0f}-{e['prefill_tok_s_range'][1]:.0f} tok/s, "
        f"decode {lo:.0f}-{hi:.0f} tok/s, end-to-end ({e['n_gen']} tokens out) "
        f"{e['e2e_ms_range'][0]:.0f}-{e['e2e_ms_range'][1]:.0f} ms",
        f"  decode is {e['decode_bound']}-bound: {e['why']}",
        f"  calibration: {e['calibration']}",
        f"  measured error: median {err['median_abs_error']:.0%}, worst {err['worst_abs_error']:.0%} "
        f"({err['within_30pct']}/{err['n']} within 30%; {err['method']})",
    ])


def main(args: argparse.Namespace) -> int:
    if "list" in args.estimate:
        from .estimate import list_devices

        print("\n".join(list_devices()))
        return 0
    devices = []
    if args.estimate:
        from .estimate import load_device

        devices = [load_device(d) for d in args.estimate]  # fail before measuring anything
    from finllm_edge.engine import Engine, EngineOptions
    from finllm_edge.models import default_model_path
    from finllm_edge.onnx_engine import OnnxEngine, is_onnx_model_dir

    models = [Path(m) for m in args.models] or [default_model_path()]
    n_ctx = args.n_prompt + args.n_gen + 8
    profiles, estimates = [], []
    for model in models:
        print(f"[bench] {model.name}: pp{args.n_prompt} + tg{args.n_gen}, {args.warmup} warm-up + "
              f"{args.repetitions} repetitions", file=sys.stderr, flush=True)
        onnx = is_onnx_model_dir(model)
        engine_cls = OnnxEngine if onnx else Engine
        opts = EngineOptions(n_threads=args.threads, n_ctx=n_ctx, flash_attn=args.flash_attn and not onnx)
        with engine_cls(model, options=opts) as engine:
            profiles.append(engine.benchmark(args.n_prompt, args.n_gen, args.repetitions, args.warmup))
        if devices and not onnx:  # the estimate reads GGUF tensor types
            from .estimate import estimate, model_stats

            stats = model_stats(model)
            cal = cached_calibration()
            for dev in devices:
                estimates.append(estimate(stats, dev, args.n_prompt, args.n_gen, cal=cal).to_dict())
    print(format_table(profiles, estimates))
    for e in estimates:
        print(format_estimate(e))
    for e in estimates[: len(devices)]:
        print(f"\nassumptions of the {e['device_name']} ESTIMATE:")
        for a in e["assumptions"]:
            print(f"  - {a}")
    atomic_write_json(args.output, {"profiles": profiles, "estimates": estimates})
    print(f"\n[bench] wrote {args.output}", file=sys.stderr)
    return 0
