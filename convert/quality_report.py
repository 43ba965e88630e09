"""Stage `report`: the finance task evaluation (task_eval.py) on every artifact, added to the quality report
written by stage `quality`, and the quality-against-size PNG.

    out/quality.json      + "task": per artifact exact match, numeric fidelity, accuracy kept, intervals;
                            "lora_gain": base (no adapter) vs merged F16
    out/quality.md        + the task table
    out/task_answers.json every answer of every artifact with its score (to read what went wrong)
    out/quality.png       top-1 agreement and task exact match against file size
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import atomic


def _base_model(ctx) -> dict:
    """The model without the adapter, as a GGUF the core can run: the GGUF base itself, or an F16 GGUF of the
    HF base folder written into .work (deleted after the task)."""
    from .quantize import gguf_weight_stats

    pre = ctx.pre
    if pre.base.kind == "gguf":
        path = Path(pre.base.path)
    else:
        from .gguf_writer import write_gguf

        path = ctx.opts.out / ".work" / "base-f16.gguf"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_gguf(pre.base.path, path, "f16", pre.arch, pre.base.config, ctx.tokenizer, ctx.provenance, None)
    return {"path": str(path), "quant": "base", **gguf_weight_stats(path)}


def run_task(ctx) -> dict:
    from . import task_eval

    o = ctx.opts
    ts = task_eval.load_taskset(o.task_file)
    if o.task_passages:
        ts["passages"] = ts["passages"][:o.task_passages]
    base = _base_model(ctx)
    try:
        return task_eval.evaluate(ctx.artifacts, "f16", ts, o.threads, base,
                                  (lambda total, desc: ctx.bar(total, desc)) if o.progress else None)
    finally:
        if ctx.pre.base.kind != "gguf":
            Path(base["path"]).unlink(missing_ok=True)


def finish_report(ctx) -> None:
    from .quality_plot import plot, task_markdown

    o = ctx.opts
    task = None
    if o.task:
        t0 = time.perf_counter()
        task = run_task(ctx)
        task["seconds"] = round(time.perf_counter() - t0, 1)
        atomic.write_json(o.out / "task_answers.json", task.pop("answers"))
        q = json.loads((o.out / "quality.json").read_text(encoding="utf-8"))
        q["task"] = task
        atomic.write_json(o.out / "quality.json", q)
        md = (o.out / "quality.md").read_text(encoding="utf-8")
        atomic.write_text(o.out / "quality.md", md + "\n" + task_markdown(task))
        ctx.quality_meta["task"] = task
        for r in task["artifacts"]:
            if r["name"] in ctx.artifacts:
                ctx.artifacts[r["name"]].update({"task_exact_match": r["exact_match"],
                                                 "task_accuracy_kept": r["accuracy_kept"]})
        ctx.notes.append(f"task: {task['n_questions']} questions x {len(task['artifacts'])} models in "
                         f"{task['seconds']} s (" + ", ".join(f"{r['name']} {r['seconds']} s"
                                                              for r in task["artifacts"]) + ")")
    plot(ctx.quality, task, o.out / "quality.png")
    work = o.out / ".work"
    if work.exists() and not any(work.iterdir()):
        work.rmdir()
