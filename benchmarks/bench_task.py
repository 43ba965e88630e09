"""The finance task (convert/task_eval.py) on the GGUF artifacts of a finished or running `convert --out DIR`,
outside the convert run: the same scoring, prompts and intervals as the report stage, on the artifacts found,
with the base model (no adapter) for what the LoRA adds. Prints JSON and a Markdown table; writes
DIR/task-bench.json, DIR/task-bench.md and DIR/task-bench.png.

    python benchmarks/bench_task.py --out /tmp/te_runs/smollm2                     # every model-*.gguf there
    python benchmarks/bench_task.py --out DIR --models f16,q8_0,q4_0 --passages 40  # a subset, first 40 passages
    python benchmarks/bench_task.py --out DIR --reuse          # add new artifacts, keep the answers scored before

A folder of `convert --adapter-gguf` also has rows base-<q>+adapter (base-<q>.gguf with adapter-f16.gguf applied
at run time by the core), named like the report stage's; they run by default too, or name them in --models.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ORDER = ["f16", "q8_0", "q4_k_m", "q4_0", "awq-q4_k_m", "awq-q4_0", "awq-mixed-q4_k_m", "awq-mixed-q4_0"]


def main(argv=None) -> int:
    from finllm_edge.models import default_model_path
    from finllm_edge_convert import task_eval
    from finllm_edge_convert.quality_plot import plot, task_markdown
    from finllm_edge_convert.quantize import gguf_weight_stats

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="a convert output folder (model-<name>.gguf files)")
    p.add_argument("--models", help="comma list of artifact names (default: every model-*.gguf, F16 first)")
    p.add_argument("--base", type=Path, help="the model without the adapter (default: the embedded SmolLM2 GGUF)")
    p.add_argument("--no-base", action="store_true", help="do not score the base model")
    p.add_argument("--task-set", type=Path, help="task set JSON (default: the shipped one)")
    p.add_argument("--passages", type=int, help="score the first N passages only")
    p.add_argument("--threads", type=int, default=2, help="threads per model (1 is faster on an oversubscribed "
                   "machine: llama.cpp's threads wait for each other)")
    p.add_argument("--reuse", action="store_true", help="reuse the answers of models already in DIR/task-bench.json "
                   "(greedy answers of the same files on the same task set) and score only the new ones")
    a = p.parse_args(argv)
    found = {f.name[len("model-"):-len(".gguf")]: f for f in sorted(a.out.glob("model-*.gguf"))}
    adapter = a.out / "adapter-f16.gguf"   # convert --adapter-gguf: base-<q>.gguf + the adapter at run time
    runtime = {f"{f.name[:-len('.gguf')]}+adapter": f for f in sorted(a.out.glob("base-*.gguf"))
               if adapter.exists()}
    found.update(runtime)
    names = a.models.split(",") if a.models else sorted(found, key=lambda n: (ORDER + [n]).index(n))
    missing = [n for n in names if n not in found]
    if "f16" not in names or missing:
        sys.exit(f"bench_task: need model-f16.gguf (the reference) and every named model in {a.out}; "
                 f"missing: {missing or ['f16']}")
    arts = {n: {"path": str(found[n]), **gguf_weight_stats(found[n])} for n in names}
    for n in set(names) & set(runtime):   # the same rows as the report stage's (pipeline.stage_adapter)
        arts[n]["engine_options"] = {"adapters": [str(adapter)]}
        arts[n]["file_bytes"] += adapter.stat().st_size   # sizes count base + adapter, as the report's rows
    base = None
    if not a.no_base:
        bp = a.base or default_model_path()
        base = {"path": str(bp), **gguf_weight_stats(bp)}
    from finllm_edge_convert.taskset import SHIPPED

    ts = task_eval.load_taskset(a.task_set or SHIPPED)
    if a.passages:
        ts["passages"] = ts["passages"][:a.passages]
    cached = {}
    if a.reuse and (a.out / "task-bench.json").exists():   # greedy answers of models scored before, same files
        old = json.loads((a.out / "task-bench.json").read_text())
        secs = {r["name"]: r["seconds"] for r in old["artifacts"]}
        cached = {n: (ans, secs[n]) for n, ans in old["answers"].items()
                  if n in secs and (n in arts or n == "base (no adapter)")}
    t0 = time.perf_counter()
    from tqdm import tqdm

    task = task_eval.evaluate(arts, "f16", ts, a.threads, base,
                              lambda total, desc: tqdm(total=total, desc=desc, file=sys.stderr, mininterval=10),
                              cached)
    task["seconds"] = round(time.perf_counter() - t0, 1)
    answers = task.pop("answers")
    (a.out / "task-bench.json").write_text(json.dumps({**task, "answers": answers}, indent=1) + "\n")
    md = task_markdown(task)
    (a.out / "task-bench.md").write_text(md)
    q = a.out / "quality.json"
    rows = json.loads(q.read_text())["artifacts"] if q.exists() else []
    plot(rows, task, a.out / "task-bench.png")
    print(json.dumps(task, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
