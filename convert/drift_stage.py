"""Stage `drift`: the drift reference of the adapter's tuning text (see finllm_edge/drift_build.py)
-> OUT/drift-ref.fedrift (read by the core on the phone) + OUT/drift-ref.json (what it holds).

The text is --drift-ref TEXT, or, for the shipped finance adapter, the text it was tuned on
(convert/data/finance_train.txt, see scripts/train_finance_lora.py). Tokens come from the F16 GGUF
through the core's tokenizer: the same ids the phone counts."""

from __future__ import annotations

from pathlib import Path

from . import atomic

REF_NAME, SUMMARY_NAME = "drift-ref.fedrift", "drift-ref.json"


def drift_text(opts, default_adapter: Path, default_text: Path) -> Path | None:
    if opts.drift_ref:
        return Path(opts.drift_ref)
    if opts.lora and Path(opts.lora).resolve() == default_adapter.resolve():
        return default_text
    return None


def stage_drift(ctx) -> None:
    from dataclasses import asdict

    from finllm_edge import Engine
    from finllm_edge.drift import DriftParams
    from finllm_edge.drift_build import make_reference
    from finllm_edge.hashing import sha256_file

    from .pipeline import DATA_DIR, DEFAULT_ADAPTER

    o = ctx.opts
    text_path = drift_text(o, DEFAULT_ADAPTER, DATA_DIR / "finance_train.txt")
    if text_path is None:
        ctx.notes.append("drift: no reference written; give --drift-ref TEXT (the adapter's tuning text) to monitor "
                         "what users ask against it on the device")
        return
    text = text_path.read_text(encoding="utf-8")
    with Engine(ctx.artifacts["f16"]["path"], n_ctx=64, n_threads=1) as engine:
        ref, summary = make_reference(engine, text, params=DriftParams(window_tokens=o.drift_window),
                                      watch_rate=o.drift_watch_rate, drift_rate=o.drift_rate)
    out = o.out / REF_NAME
    tmp = out.with_name(out.name + ".partial")
    ref.save(tmp)          # the core writes it atomically; renamed into place once complete
    tmp.replace(out)
    ref.close()
    doc = {"reference": REF_NAME, "text": str(text_path), "text_sha256": sha256_file(text_path), **asdict(summary)}
    atomic.write_json(o.out / SUMMARY_NAME, doc)
    ctx.drift = doc
    i = summary.info
    ctx.notes.append(f"drift: reference of {summary.n_tokens} tokens ({text_path.name}), window {i['window_tokens']} "
                     f"tokens; thresholds watch {i['watch_threshold']:.4f} / drift {i['drift_threshold']:.4f} nats at "
                     f"false-alarm rates {i['watch_rate']:g} / {i['drift_rate']:g} ({summary.n_windows} held-out "
                     f"windows, {summary.folds}-fold)")
