"""`finllm-edge drift ref|report|export`: the re-tune loop around the core's drift monitor.

    finllm-edge drift ref --model M.gguf --text tuning.txt -o drift-ref.fedrift   # what convert writes too
    finllm-edge drift report STATE.json --model M.gguf -o out/drift/              # what moved, in words + PNG
    finllm-edge drift export STATE.json --model M.gguf -o new_text.txt           # sampled prompts (opt-in)

STATE.json is what the app saved from its monitor (DriftMonitor.state_json() in Python,
FinLlm.driftStateJson() on Android, fe_drift_monitor_json() in C): bucket counts, thresholds and
the KL history; never text, unless the app opted in to sampling prompts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from finllm_edge.errors import FinLLMEdgeError

from .argtypes import float_range, int_range

DESCRIPTION = """\
The re-tune loop: see what users ask that the model was not tuned on, export it, re-tune.

  ref     make a drift reference (token buckets of the tuning text + thresholds calibrated on
          held-out windows at a false-alarm rate) for a model's tokenizer; `finllm-edge convert`
          writes the same file as OUT/drift-ref.fedrift
  report  read a monitor state saved on the device: the state (none / watch / drift), the KL
          against the thresholds, and what moved: the tokens whose share of the window grew or
          shrank most against the tuning text, in words; a PNG of the KL over time (-o DIR)
  export  the prompts the app sampled (only when it opted in: DriftMonitor.set_sampling /
          FinLlm.driftSampling), as text, one per line, for re-tuning (scripts/train_finance_lora.py)
"""

EPILOG = """\
examples:
  finllm-edge drift ref --model out/convert/model-q4_0.gguf --text convert/data/finance_train.txt -o ref.fedrift
  finllm-edge drift report drift-state.json --model out/convert/model-q4_0.gguf -o out/drift
  finllm-edge drift export drift-state.json --model out/convert/model-q4_0.gguf -o new_domain.txt
"""


class DriftStateError(FinLLMEdgeError, ValueError):
    """A file that is not a valid drift monitor state."""


def configure(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="drift_cmd", metavar="CMD", required=True)
    r = sub.add_parser("ref", help="make a calibrated drift reference from tuning text")
    r.add_argument("--model", type=Path, required=True, help="a GGUF with the tokenizer the device uses")
    r.add_argument("--text", type=Path, required=True, help="the adapter's tuning text (UTF-8)")
    r.add_argument("-o", "--out", type=Path, required=True, help="reference file to write (.fedrift)")
    r.add_argument("--window", type=int_range(16, 1 << 20), default=2048, help="window of prompt tokens (default 2048)")
    r.add_argument("--watch-rate", type=float_range(0, 1, lo_open=True), default=0.05,
                   help="false-alarm rate of the watch threshold (default 0.05)")
    r.add_argument("--drift-rate", type=float_range(0, 1, lo_open=True), default=0.01,
                   help="false-alarm rate of the drift threshold (default 0.01)")
    r.add_argument("--windows", type=int_range(100, 10_000_000), default=20000,
                   help="held-out windows to calibrate on (default 20000)")
    r.add_argument("--seed", type=int_range(0), default=20260917, help="calibration seed (default 20260917)")
    for name, helptext in (("report", "what moved, in words, and a PNG of the KL over time"),
                           ("export", "the sampled prompts (opt-in on the device) as text for re-tuning")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("state", type=Path, help="monitor state JSON saved by the app")
        s.add_argument("--model", type=Path, help="the GGUF the state was made with (to show tokens as text); "
                       "required for export")
        s.add_argument("-o", "--out", type=Path, help="report: folder for report.md + drift_kl.png; export: file")
        if name == "report":
            s.add_argument("--top", type=int_range(1, 100), default=10, help="buckets to list each way (default 10)")


def main(args: argparse.Namespace) -> int:
    return {"ref": cmd_ref, "report": cmd_report, "export": cmd_export}[args.drift_cmd](args)


# ------------------------------------------------------------------ ref

def cmd_ref(args) -> int:
    from finllm_edge import Engine
    from finllm_edge.drift import DriftParams
    from finllm_edge.drift_build import make_reference

    text = args.text.read_text(encoding="utf-8")
    with Engine(args.model, n_ctx=64, n_threads=1) as engine:
        ref, s = make_reference(engine, text, params=DriftParams(window_tokens=args.window),
                                watch_rate=args.watch_rate, drift_rate=args.drift_rate, n_windows=args.windows,
                                seed=args.seed)
    with ref:
        ref.save(args.out)
    i = s.info
    print(f"{args.out}: {s.n_tokens} tokens in {s.n_lines} lines -> {i['n_buckets']} buckets "
          f"({i['n_named']} named tokens), window {i['window_tokens']}; thresholds watch {i['watch_threshold']:.4f} / "
          f"drift {i['drift_threshold']:.4f} nats at false-alarm rates {i['watch_rate']:g} / {i['drift_rate']:g} "
          f"({s.n_windows} held-out windows, {s.folds}-fold)")
    return 0


# ------------------------------------------------------------------ reading a state

def load_state(path: Path) -> dict:
    """A monitor state file, checked before use (it comes from a device: untrusted)."""
    raw = path.read_bytes()
    if len(raw) > 64 << 20:
        raise DriftStateError(f"{path}: {len(raw)} bytes is too large for a drift state (64 MiB cap)")
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DriftStateError(f"{path} is not JSON ({exc}); pass the drift state the app saved "
                              "(DriftMonitor.state_json(), FinLlm.driftStateJson())") from exc
    if not isinstance(d, dict) or d.get("schema") != "finllm-edge/drift-state":
        raise DriftStateError(f"{path} is not a finllm-edge drift state (no \"schema\": \"finllm-edge/drift-state\")")
    if d.get("version") != 1:
        raise DriftStateError(f"{path}: drift state version {d.get('version')!r} is not supported (1)")
    try:
        ref = d["reference"]
        nb, named, probs, counts = ref["n_buckets"], ref["named_tokens"], ref["probs"], d["window_counts"]
        ok = (isinstance(nb, int) and 2 <= nb <= 65536 and isinstance(named, list) and len(named) < nb
              and len(probs) == nb and len(counts) == nb
              and all(isinstance(t, int) and t >= 0 for t in named)
              and all(isinstance(c, int) and c >= 0 for c in counts)
              and all(isinstance(q, (int, float)) and 0 < q <= 1 for q in probs)
              and isinstance(ref["smoothing"], (int, float)) and ref["smoothing"] > 0
              and isinstance(d["history"], list) and d["state"] in ("none", "watch", "drift"))
    except (KeyError, TypeError) as exc:
        raise DriftStateError(f"{path}: drift state lacks {exc}") from None
    if not ok:
        raise DriftStateError(f"{path}: drift state fields are inconsistent (bucket counts, probabilities or named "
                              "tokens out of range)")
    return d


def contributions(d: dict) -> list[dict]:
    """Per bucket: share in the window p, in the tuning text q, and p*log(p/q) (sums to the KL)."""
    ref = d["reference"]
    a, counts, probs = float(ref["smoothing"]), d["window_counts"], ref["probs"]
    z = sum(counts) + a * len(counts)
    rows = []
    for b, (c, q) in enumerate(zip(counts, probs)):
        p = (c + a) / z
        rows.append({"bucket": b, "p": p, "q": float(q), "contribution": p * math.log(p / q), "count": c})
    return rows


def _token_texts(model: Path | None, ids: list[int]) -> dict[int, str]:
    if model is None or not ids:
        return {}
    from finllm_edge import Engine

    with Engine(model, n_ctx=64, n_threads=1) as e:
        return {t: e.token_piece(t) for t in ids}


def _label(row: dict, named: list[int], texts: dict[int, str]) -> str:
    b = row["bucket"]
    if b < len(named):
        t = named[b]
        return repr(texts[t]) if t in texts else f"token {t}"
    return f"rarely-seen tokens (hash bucket {b})"


def explain(d: dict, texts: dict[int, str], top: int) -> list[str]:
    rows = contributions(d)
    named = d["reference"]["named_tokens"]
    kl_sum = sum(r["contribution"] for r in rows)
    th = d["thresholds"]
    lines = [f"state: {d['state'].upper()}  KL(window || tuning text) = {d['kl']:.4f} nats "
             f"(watch {th['watch']:.4f} at {th['watch_rate']:g} false alarms, drift {th['drift']:.4f} at "
             f"{th['drift_rate']:g})" if th["watch"] is not None else f"state: {d['state'].upper()} (uncalibrated)",
             f"observed: {d['n_requests']} requests, {d['n_tokens']} prompt tokens; window {d['n_window']} of "
             f"{d['window_tokens']} tokens; {d['n_evaluations']} evaluations, {d['n_watch']} at watch or above, "
             f"{d['n_drift']} at drift" + (f"; first drift after request {d['first_drift']['request']} "
                                          f"({d['first_drift']['tokens']} tokens)" if d.get("first_drift") else "")]
    if abs(kl_sum - d["kl"]) > 1e-6 * max(1.0, d["kl"]) and d["n_window"] > 0:
        lines.append(f"warning: the bucket counts give KL {kl_sum:.6f}, the state says {d['kl']:.6f}")
    hashed = [r for r in rows if r["bucket"] >= len(named)]
    p_h, q_h = sum(r["p"] for r in hashed), sum(r["q"] for r in hashed)
    lines.append(f"tokens outside the tuning text's {len(named)} most frequent: {p_h:.1%} of the window vs "
                 f"{q_h:.1%} of the tuning text" + (" (new vocabulary: another language or sub-domain?)"
                                                   if p_h > 2 * q_h and p_h > 0.1 else ""))
    grew = sorted(rows, key=lambda r: -r["contribution"])[:top]
    lines.append("asked about more than in the tuning text (largest KL contributions):")
    for r in grew:
        if r["contribution"] <= 0:
            break
        lines.append(f"  {_label(r, named, texts):40s} {r['p']:7.2%} of the window vs {r['q']:7.2%}  "
                     f"(+{r['contribution']:.4f} nats)")
    shrank = sorted((r for r in rows if r["bucket"] < len(named)), key=lambda r: r["p"] / r["q"])[:top]
    lines.append("asked about less than in the tuning text:")
    for r in shrank:
        lines.append(f"  {_label(r, named, texts):40s} {r['p']:7.2%} of the window vs {r['q']:7.2%}")
    return lines


def plot_history(d: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = d["history"]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    if hist:
        ax.plot([h[1] for h in hist], [h[2] for h in hist], lw=1.2, label="KL(window || tuning text)")
    th = d["thresholds"]
    for key, color in (("watch", "#ff7f0e"), ("drift", "#d62728")):
        if th.get(key) is not None:
            ax.axhline(th[key], color=color, ls="--", lw=1, label=f"{key} ({th[key + '_rate']:g} false alarms)")
    ax.set_xlabel("prompt tokens observed")
    ax.set_ylabel("KL (nats)")
    ax.set_title(f"drift monitor: {d['state']}")
    ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, bbox_inches="tight", dpi=110)
    plt.close(fig)


def cmd_report(args) -> int:
    d = load_state(args.state)
    named = d["reference"]["named_tokens"]
    rows = contributions(d)
    wanted = sorted({named[r["bucket"]] for r in sorted(rows, key=lambda r: -r["contribution"])[:args.top]
                     + sorted(rows, key=lambda r: r["p"] / r["q"])[:args.top * 2] if r["bucket"] < len(named)})
    lines = explain(d, _token_texts(args.model, wanted), args.top)
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        from finllm_edge.fileio import atomic_write_text

        atomic_write_text(args.out / "report.md", "# Drift report\n\n```\n" + "\n".join(lines) +
                          "\n```\n\n![KL over time](drift_kl.png)\n")
        plot_history(d, args.out / "drift_kl.png")
        print(f"wrote {args.out / 'report.md'} and {args.out / 'drift_kl.png'}", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    d = load_state(args.state)
    if not d.get("sampling") or not d.get("samples"):
        raise DriftStateError(f"{args.state} holds counts only: the app did not opt in to sampling prompts "
                              "(DriftMonitor.set_sampling(n) / FinLlm.driftSampling(n, everyN)), so there is no text "
                              "to export. Use `finllm-edge drift report` to see which tokens moved")
    if args.model is None or args.out is None:
        raise DriftStateError("export needs --model (to turn the sampled token ids into text) and -o FILE")
    from finllm_edge import Engine
    from finllm_edge.fileio import atomic_write_text

    samples = d["samples"]
    if not all(isinstance(s, list) and all(isinstance(t, int) and t >= 0 for t in s) for s in samples):
        raise DriftStateError(f"{args.state}: samples must be lists of token ids")
    with Engine(args.model, n_ctx=64, n_threads=1) as e:
        lines = [" ".join(e.detokenize(s).split()) for s in samples]
    atomic_write_text(args.out, "\n\n".join(line for line in lines if line) + "\n")
    print(f"wrote {len(lines)} sampled prompts to {args.out}; re-tune with scripts/train_finance_lora.py "
          f"--train {args.out} (see the README's re-tune loop)")
    return 0
