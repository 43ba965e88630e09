"""Structure-aware fuzzing of the GGUF validator: the core library (in-process, through
finllm_edge.gguf_validate.validate_gguf -> fe_gguf_preflight) and the same C source built
standalone with ASan+UBSan (in a subprocess).

    python scripts/fuzz_gguf.py [--seconds 300] [--seed N] [--json out.json] [--no-llama]

Mutates two valid bases (the tiny llama model of tests/gen_bad_gguf.py, and the header of
SmolLM2-135M in a sparse file of the real size) with the mutators of tests/gguf_tools.py.
A crash is: the binding raising anything but GGUFValidationError; the sanitized build dying
of a signal, printing a sanitizer report or exiting oddly. A mismatch is the two builds
disagreeing (accept vs refuse, or a different field where the core names one; the core's
own header checks in gguf_preflight.cpp use their own words). Mutants both
accept are loaded by llama.cpp (llama-cpp-python, same pinned release) in a worker process,
which must not die of a signal. Prints JSON and a table; exit status 1 if anything was found.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import gen_bad_gguf as gen  # noqa: E402
from finllm_edge.gguf_validate import GGUFValidationError, validate_gguf  # noqa: E402
from gguf_tools import build_c_validator, file_records, mutate, run_c_validator, sanitizer_report  # noqa: E402

LLAMA_WORKER = r"""
import os, sys, llama_cpp as lc
QUIET = lc.llama_log_callback(lambda *a: None)  # keep a reference: llama.cpp calls it later
lc.llama_log_set(QUIET, None)
lc.llama_backend_init()
for line in sys.stdin:
    p = lc.llama_model_default_params()
    m = lc.llama_model_load_from_file(line.strip().encode(), p)
    if m:
        lc.llama_model_free(m)
    print("@@loaded" if m else "@@rejected", flush=True)
"""


class Base:
    def __init__(self, name: str, header: bytes, records, size: int):
        self.name, self.header, self.records, self.size = name, header, records, size


def bases(workdir: Path) -> list[Base]:
    tiny = gen.build(gen.tiny_llama_spec())
    out = [Base("tiny", tiny.data, tiny.records, len(tiny.data))]
    from finllm_edge.models import default_model_path

    real = default_model_path()
    recs = file_records(real)
    hdr_end = recs[-1][1]
    with open(real, "rb") as f:
        out.append(Base("smollm2", f.read(hdr_end), recs, real.stat().st_size))
    return out


def write_mutant(path: Path, base: Base, rnd: random.Random) -> None:
    data = mutate(base.header, base.records, rnd)
    with open(path, "wb") as f:
        f.write(data)
        if base.size > len(base.header) and len(data) >= len(base.header) - 64 and rnd.random() < 0.8:
            f.truncate(base.size + len(data) - len(base.header))  # sparse data section
    return None


def python_verdict(path: Path):
    """The core library's verdict: (0, None) accepted, (-2, field or None) refused."""
    try:
        validate_gguf(path)
        return (0, None)
    except GGUFValidationError as e:
        return (-2, e.field)


def agree(core: tuple, c) -> bool:
    if core[0] == 0 or c.code == 0:
        return core[0] == c.code
    return core[1] is None or core[1] == c.field


class LlamaWorker:
    def __init__(self):
        self.proc = None

    def load(self, path: Path) -> str:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, "-c", LLAMA_WORKER], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                         errors="replace", env={**os.environ, "GGML_NO_BACKTRACE": "1"})
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:  # anything before the marker is llama.cpp's noise
            if line.startswith("@@"):
                return line[2:].strip()
        rc = self.proc.wait()
        self.proc = None
        return f"signal {-rc}" if rc < 0 else f"exit {rc}"

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def fuzz(seconds: float, seed: int, use_llama: bool, batch: int = 100) -> dict:
    work = Path(tempfile.mkdtemp(prefix="fuzz_gguf_"))
    crashdir = work / "crashes"
    crashdir.mkdir()
    exe = build_c_validator(work, sanitize=True)
    bs = bases(work)
    rnd = random.Random(seed)
    worker = LlamaWorker() if use_llama else None
    stats = {b.name: {"executions": 0, "accepted": 0, "crashes": 0, "mismatches": 0} for b in bs}
    llama = {"loaded": 0, "rejected": 0, "crashes": 0}
    findings = []
    t0 = time.perf_counter()
    rounds = 0
    while time.perf_counter() - t0 < seconds:
        base = bs[0] if rounds % 10 else bs[1]  # the real header is ~100x slower to parse in Python
        rounds += 1
        paths = [work / f"m{i}.gguf" for i in range(batch if base.name == "tiny" else 10)]
        for p in paths:
            write_mutant(p, base, rnd)
        py = []
        for p in paths:
            try:
                py.append(python_verdict(p))
            except Exception as e:  # any other exception is a finding
                py.append(("crash", type(e).__name__, str(e)[:200]))
        verdicts, proc = run_c_validator(exe, paths, sanitize=True)
        report = sanitizer_report(proc.stderr)
        if proc.returncode not in (0, 1) or report or len(verdicts) != len(paths):
            for p in paths:  # find the culprit
                v, pr = run_c_validator(exe, [p], sanitize=True)
                if pr.returncode not in (0, 1) or sanitizer_report(pr.stderr):
                    keep = crashdir / f"c_{base.name}_{len(findings)}.gguf"
                    p.rename(keep)
                    findings.append({"kind": "c_crash", "file": str(keep), "rc": pr.returncode,
                                     "report": (sanitizer_report(pr.stderr) or pr.stderr[-300:])})
                    stats[base.name]["crashes"] += 1
            continue
        for p, a, v in zip(paths, py, verdicts):
            stats[base.name]["executions"] += 1
            if a[0] == "crash":
                stats[base.name]["crashes"] += 1
                keep = crashdir / f"py_{base.name}_{len(findings)}.gguf"
                p.rename(keep)
                findings.append({"kind": "python_exception", "file": str(keep), "error": f"{a[1]}: {a[2]}"})
            elif not agree(a, v):
                stats[base.name]["mismatches"] += 1
                keep = crashdir / f"diff_{base.name}_{len(findings)}.gguf"
                p.rename(keep)
                findings.append({"kind": "mismatch", "file": str(keep), "python": a,
                                 "c": [v.code, v.offset, v.field]})
            elif a[0] == 0:
                stats[base.name]["accepted"] += 1
                if worker:
                    res = worker.load(p)
                    if res in ("loaded", "rejected"):
                        llama[res] += 1
                    else:
                        llama["crashes"] += 1
                        keep = crashdir / f"llama_{base.name}_{len(findings)}.gguf"
                        p.rename(keep)
                        findings.append({"kind": "llama_crash", "file": str(keep), "result": res})
    elapsed = time.perf_counter() - t0
    if worker:
        worker.close()
    total = sum(s["executions"] for s in stats.values())
    return {"seconds": round(elapsed, 1), "seed": seed, "executions": total,
            "executions_per_s": round(total / elapsed, 1),
            "crashes": sum(s["crashes"] for s in stats.values()) + llama["crashes"],
            "mismatches": sum(s["mismatches"] for s in stats.values()),
            "per_base": stats, "llama_cpp_on_accepted": llama if use_llama else None,
            "findings": findings, "workdir": str(work)}


def table(r: dict) -> str:
    rows = [f"{'base':<10}{'executions':>12}{'accepted':>10}{'crashes':>9}{'mismatches':>12}"]
    for name, s in r["per_base"].items():
        rows.append(f"{name:<10}{s['executions']:>12}{s['accepted']:>10}{s['crashes']:>9}{s['mismatches']:>12}")
    rows.append(f"{'total':<10}{r['executions']:>12}{'':>10}{r['crashes']:>9}{r['mismatches']:>12}")
    rows.append(f"{r['executions_per_s']} executions/s over {r['seconds']} s (seed {r['seed']})")
    if r["llama_cpp_on_accepted"]:
        rows.append("llama.cpp loader on accepted mutants: "
                    + ", ".join(f"{k} {v}" for k, v in r["llama_cpp_on_accepted"].items()))
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-llama", action="store_true", help="do not load accepted mutants with llama.cpp")
    a = ap.parse_args()
    r = fuzz(a.seconds, a.seed, not a.no_llama)
    text = json.dumps(r, indent=1)
    if a.json:
        a.json.write_text(text + "\n")
    print(text)
    print(table(r))
    return 1 if r["crashes"] or r["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
