"""llama-bench's JSON output (`-o json`), the one reader: every benchmark and calibration that runs
upstream's llama-bench goes through `rows` / `one_row` / `rates`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def rows(exe: Path, model: Path, threads: int, reps: int, *args: str) -> list[dict]:
    """The result rows of `llama-bench -m model -t threads -r reps -o json args...`: each has
    n_prompt, n_gen, samples_ts (tokens/s of every repetition) and samples_ns (its nanoseconds)."""
    cmd = [str(exe), "-m", str(model), "-t", str(threads), "-r", str(reps), "-o", "json", *args]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    if not isinstance(out, list) or not all(isinstance(r, dict) and "samples_ts" in r for r in out):
        raise RuntimeError(f"llama-bench printed no result rows for {' '.join(args)}")
    return out


def one_row(exe: Path, model: Path, threads: int, reps: int, *args: str) -> dict:
    """The single row of a run of one test (e.g. `-p 64 -n 0`)."""
    got = rows(exe, model, threads, reps, *args)
    if len(got) != 1:
        raise RuntimeError(f"llama-bench returned {len(got)} results for {' '.join(args)}")
    return got[0]


def rates(exe: Path, model: Path, threads: int, reps: int, n_prompt: int, n_gen: int, *args: str) -> dict:
    """Tokens/s of every repetition of the prefill test ("pp", `-p n_prompt`) and the decode test
    ("tg", `-n n_gen`) of one run."""
    out: dict[str, list[float]] = {}
    for row in rows(exe, model, threads, reps, "-p", str(n_prompt), "-n", str(n_gen), *args):
        out["pp" if row["n_gen"] == 0 else "tg"] = [float(x) for x in row["samples_ts"]]
    return out
