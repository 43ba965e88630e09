"""Value-level fuzzing of model files through the C core: load + one token, count signals.

    python scripts/fuzz_gguf_values.py [--runs N | --seconds S] [--seed N] [--jobs J] [--out DIR]

scripts/fuzz_gguf.py mutates bytes of the header layout; this script mutates *values*. It
starts from small valid models (the tests' 1-layer llama, and a 1-layer qwen2 with its own
vocabulary) and, per mutant, applies 1..3 of: set a key's value to 0, 1, -1, NaN, +-inf, a
huge number or a value of the wrong type; add a key the pinned llama.cpp reads (every
"%s.*" and "tokenizer.*" key name in its src/llama-arch.cpp, for any architecture) with
such a value; turn a scalar into a per-layer array or change an array's length or one
element. Each mutant goes to a persistent worker process that loads it through the C core
(tests/c/fe_load_worker.c: fe_model_load -> fe_gguf_preflight -> llama.cpp, as every
binding does), tokenizes and detokenizes a line, generates one token, and reports. A worker that dies of a signal is a
finding (the file is kept in --out) and is restarted; one that takes longer than --timeout
seconds on a file is a hang (killed, kept, restarted).

Prints a JSON summary and a table: executions, refused by the validator, loaded and ran,
refused later by llama.cpp (clean errors), signals, hangs.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import re
import select
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import gen_bad_gguf as gen  # noqa: E402


def build_worker(outdir: Path) -> Path:
    """tests/c/fe_load_worker.c against the host build of the core (built if needed)."""
    import shutil

    from finllm_edge.native.build import ensure_built

    b = ensure_built("host")
    cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
    exe = Path(outdir) / "fe_load_worker"
    libdir = b.lib_shared.parent
    subprocess.run(
        [
            cc,
            "-std=c99",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{b.include_dir}",
            str(ROOT / "tests/c/fe_load_worker.c"),
            f"-L{libdir}",
            "-lfinllm_edge",
            f"-Wl,-rpath,{libdir}",
            "-o",
            str(exe),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return exe


_FIELD = re.compile(r"invalid GGUF field '([^']*)'")


def arch_keys(arch: str) -> list[str]:
    """Every metadata key name the pinned llama.cpp knows, for this architecture."""
    try:
        from finllm_edge.native.fetch import llama_src_dir

        text = (llama_src_dir(progress=False) / "src/llama-arch.cpp").read_text()
    except Exception:  # no pinned source: the keys of the base files only
        return []
    keys = re.findall(r'"(%s\.[a-z0-9_.]+|tokenizer\.[a-z0-9_.]+|general\.[a-z0-9_.]+)"', text)
    return sorted({k.replace("%s", arch) for k in keys})


def tiny_qwen2_spec() -> gen.Spec:
    """A 1-layer qwen2 model with its own 12-token vocabulary (not the tests' llama one)."""
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "h", "i", "Ġ", "hi", "Ġh", "Ġhi", "\u010a", "x", "y"]
    n_embd, n_ff, n_vocab = 64, 96, len(tokens)
    kvs = [
        gen.KV("general.architecture", gen.STR, "qwen2"),
        gen.KV("qwen2.block_count", gen.U32, 1),
        gen.KV("qwen2.context_length", gen.U32, 128),
        gen.KV("qwen2.embedding_length", gen.U32, n_embd),
        gen.KV("qwen2.feed_forward_length", gen.U32, n_ff),
        gen.KV("qwen2.attention.head_count", gen.U32, 4),
        gen.KV("qwen2.attention.head_count_kv", gen.U32, 2),
        gen.KV("qwen2.rope.freq_base", gen.F32, 1000000.0),
        gen.KV("qwen2.attention.layer_norm_rms_epsilon", gen.F32, 1e-6),
        gen.KV("tokenizer.ggml.model", gen.STR, "gpt2"),
        gen.KV("tokenizer.ggml.pre", gen.STR, "qwen2"),
        gen.KV("tokenizer.ggml.tokens", gen.ARR, tokens, elem=gen.STR),
        gen.KV("tokenizer.ggml.token_type", gen.ARR, [3, 3, 3] + [1] * (n_vocab - 3), elem=gen.I32),
        gen.KV("tokenizer.ggml.merges", gen.ARR, ["h i", "Ġ h", "Ġh i"], elem=gen.STR),
        gen.KV("tokenizer.ggml.eos_token_id", gen.U32, 2),
        gen.KV("tokenizer.ggml.padding_token_id", gen.U32, 0),
        gen.KV("tokenizer.ggml.bos_token_id", gen.U32, 0),
        gen.KV("tokenizer.ggml.add_bos_token", gen.BOOL, False),
        gen.KV("general.quantization_version", gen.U32, 2),
    ]
    e, f, kvd = n_embd, n_ff, 32  # 2 KV heads of 16
    t = gen.Tensor
    tensors = [
        t("token_embd.weight", [e, n_vocab], gen.F16_T),
        t("output_norm.weight", [e], gen.F32_T),
        t("output.weight", [e, n_vocab], gen.F16_T),
        t("blk.0.attn_norm.weight", [e], gen.F32_T),
        t("blk.0.attn_q.weight", [e, e], gen.Q8_0_T),
        t("blk.0.attn_q.bias", [e], gen.F32_T),
        t("blk.0.attn_k.weight", [e, kvd], gen.Q8_0_T),
        t("blk.0.attn_k.bias", [kvd], gen.F32_T),
        t("blk.0.attn_v.weight", [e, kvd], gen.Q8_0_T),
        t("blk.0.attn_v.bias", [kvd], gen.F32_T),
        t("blk.0.attn_output.weight", [e, e], gen.Q8_0_T),
        t("blk.0.ffn_norm.weight", [e], gen.F32_T),
        t("blk.0.ffn_gate.weight", [e, f], gen.Q8_0_T),
        t("blk.0.ffn_up.weight", [e, f], gen.Q8_0_T),
        t("blk.0.ffn_down.weight", [f, e], gen.Q8_0_T),
    ]
    return gen.Spec(kvs, tensors)


def bases() -> dict[str, gen.Spec]:
    return {"llama": gen.tiny_llama_spec(), "qwen2": tiny_qwen2_spec()}


U32_VALUES = [0, 1, 2, 3, 7, 64, 255, 511, 512, 513, 1024, 1025, 65536, (1 << 31) - 1, 1 << 31, (1 << 32) - 1]
F32_VALUES = [0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, -1e30, float("nan"), float("inf"), float("-inf"), 3.4e38, 1e-45]
I32_VALUES = [0, 1, -1, 7, -(1 << 31), (1 << 31) - 1]
STR_VALUES = ["", "x", "none", "linear", "yarn", "longrope", "llama", "gpt2", "a b", "\u00e9", "bogus " * 40]


def _random_value(rnd: random.Random, n_layer: int) -> gen.KV:
    """A fresh value of a random type (the key is filled in by the caller)."""
    r = rnd.random()
    if r < 0.35:
        return gen.KV("", gen.U32, rnd.choice(U32_VALUES))
    if r < 0.6:
        return gen.KV("", gen.F32, rnd.choice(F32_VALUES))
    if r < 0.68:
        return gen.KV("", gen.I32, rnd.choice(I32_VALUES))
    if r < 0.74:
        return gen.KV("", gen.STR, rnd.choice(STR_VALUES))
    if r < 0.78:
        return gen.KV("", gen.BOOL, rnd.random() < 0.5)
    if r < 0.81:
        return gen.KV("", gen.U64, rnd.choice(U32_VALUES + [1 << 40, (1 << 64) - 1]))
    if r < 0.84:
        return gen.KV("", gen.F64, rnd.choice(F32_VALUES))
    n = rnd.choice([0, 1, n_layer, n_layer + 1, 3, 8])
    elem = rnd.choice([gen.U32, gen.I32, gen.F32, gen.STR, gen.BOOL])
    pool = {
        gen.U32: U32_VALUES,
        gen.I32: I32_VALUES,
        gen.F32: F32_VALUES,
        gen.STR: STR_VALUES,
        gen.BOOL: [True, False],
    }[elem]
    return gen.KV("", gen.ARR, [rnd.choice(pool) for _ in range(n)], elem=elem)


def _mutate_value(kv: gen.KV, rnd: random.Random, n_layer: int) -> None:
    r = rnd.random()
    if kv.vtype == gen.ARR and kv.value and r < 0.5:  # one element, or the length
        vals = list(kv.value)
        if rnd.random() < 0.6:
            i = rnd.randrange(len(vals))
            pool = {gen.U32: U32_VALUES, gen.I32: I32_VALUES, gen.F32: F32_VALUES, gen.STR: STR_VALUES + vals}.get(
                kv.elem, vals
            )
            vals[i] = rnd.choice(pool)
        elif rnd.random() < 0.5:
            del vals[rnd.randrange(len(vals))]
        else:
            vals.append(rnd.choice(vals))
        kv.value = vals
        return
    if kv.vtype in (gen.U32, gen.F32, gen.I32) and r < 0.5:  # same type, interesting value
        kv.value = rnd.choice({gen.U32: U32_VALUES, gen.F32: F32_VALUES, gen.I32: I32_VALUES}[kv.vtype])
        return
    if kv.vtype in (gen.U32, gen.I32) and r < 0.65:  # scalar -> per-layer array
        kv.vtype, kv.elem = gen.ARR, rnd.choice([gen.U32, gen.I32])
        kv.value = [
            rnd.choice([kv.value, 0, 1, 2, 3, (1 << 31) - 1]) for _ in range(rnd.choice([n_layer, n_layer, 2, 0]))
        ]
        return
    new = _random_value(rnd, n_layer)
    kv.vtype, kv.value, kv.elem = new.vtype, new.value, new.elem


_INT_BITS = {
    gen.U8: (8, False),
    gen.I8: (8, True),
    gen.U16: (16, False),
    gen.I16: (16, True),
    gen.U32: (32, False),
    gen.I32: (32, True),
    gen.U64: (64, False),
    gen.I64: (64, True),
}


def _fit(vtype: int, v):
    """v as a value of vtype: integers wrap to its width (two's complement), like a raw write."""
    if vtype in _INT_BITS and isinstance(v, (int, float)) and not isinstance(v, bool):
        bits, signed = _INT_BITS[vtype]
        v = int(v) if isinstance(v, int) or math.isfinite(v) else 0
        v %= 1 << bits
        return v - (1 << bits) if signed and v >= 1 << (bits - 1) else v
    if vtype == gen.F32 and not isinstance(v, float):
        return float(v) if isinstance(v, (int, bool)) else 0.0
    if vtype == gen.STR and not isinstance(v, (str, bytes)):
        return str(v)
    if vtype == gen.BOOL:
        return bool(v)
    return v


def _fit_all(s: gen.Spec) -> None:
    for kv in s.kvs:
        if kv.vtype == gen.ARR:
            kv.value = [_fit(kv.elem, v) for v in kv.value]
        else:
            kv.value = _fit(kv.vtype, kv.value)


def mutant(base: gen.Spec, keys: list[str], rnd: random.Random) -> gen.Spec:
    s = copy.deepcopy(base)
    n_layer = 1
    protected = {"general.architecture", "tokenizer.ggml.tokens"}  # their mutations are the byte fuzzer's
    for _ in range(rnd.randint(1, 3)):
        if keys and rnd.random() < 0.4:  # add (or replace) a key llama.cpp reads
            key = rnd.choice(keys)
            if key in protected:
                continue
            kv = _random_value(rnd, n_layer)
            kv.key = key
            s.kvs = [k for k in s.kvs if k.key != key] + [kv]
        else:
            kv = rnd.choice([k for k in s.kvs if k.key not in protected])
            if rnd.random() < 0.05:
                s.kvs.remove(kv)
            else:
                _mutate_value(kv, rnd, n_layer)
    _fit_all(s)
    return s


class Worker:
    def __init__(self, exe: Path, timeout: float):
        self.exe, self.timeout = exe, timeout
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [str(self.exe)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            env=env,
        )

    def run(self, path: Path) -> tuple[str, str]:
        """('refused'|'ran'|'llama_error'|'signal'|'hang', detail)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
            self.restarts += 1
        assert self.proc and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                return "hang", f"no answer in {self.timeout} s"
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            line = self.proc.stdout.readline()
            if not line:  # the worker died
                rc = self.proc.wait()
                self.proc = None
                return ("signal" if rc < 0 else "died"), f"exit status {rc}"
            if line.startswith("@@"):
                kind, _, detail = line[2:].strip().partition(" ")
                if kind == "refused":
                    m = _FIELD.search(detail)
                    detail = m.group(1) if m else "(header)"
                return kind, detail

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def fuzz(
    runs: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    out: Path | None = None,
    timeout: float = 20.0,
    work: Path | None = None,
    exe: Path | None = None,
) -> dict:
    import tempfile

    rnd = random.Random(seed)
    specs = bases()
    keys = {a: arch_keys(a) for a in specs}
    work = Path(work or tempfile.mkdtemp(prefix="fuzz_values_"))
    work.mkdir(parents=True, exist_ok=True)
    if out:
        out.mkdir(parents=True, exist_ok=True)
    worker = Worker(exe or build_worker(work), timeout)
    counts: Counter = Counter()
    refused_fields: Counter = Counter()
    findings: list[dict] = []
    t0 = time.monotonic()
    n = 0
    try:
        while (runs is None or n < runs) and (seconds is None or time.monotonic() - t0 < seconds):
            arch = rnd.choice(list(specs))
            spec = mutant(specs[arch], keys[arch], rnd)
            path = work / f"m{n % 2}.gguf"
            try:
                path.write_bytes(gen.build(spec).data)
            except (struct.error, OverflowError, ValueError):  # a value the serializer cannot write
                counts["unwritable"] += 1
                n += 1
                continue
            kind, detail = worker.run(path)
            counts[kind] += 1
            counts[f"{arch}:{kind}"] += 1
            if kind == "refused":
                refused_fields[detail] += 1
            if kind in ("signal", "hang", "died"):
                keep = (out or work) / f"finding_{len(findings):04d}_{kind}.gguf"
                keep.write_bytes(path.read_bytes())
                findings.append({"run": n, "arch": arch, "kind": kind, "detail": detail, "file": str(keep)})
            n += 1
    finally:
        worker.close()
    elapsed = time.monotonic() - t0
    return {
        "seed": seed,
        "executions": n,
        "seconds": round(elapsed, 1),
        "executions_per_s": round(n / max(elapsed, 1e-9), 1),
        "refused_by_validator": counts["refused"],
        "loaded_and_ran": counts["ran"],
        "refused_by_llama_cpp": counts["llama_error"],
        "signals": counts["signal"],
        "hangs": counts["hang"],
        "died_otherwise": counts["died"],
        "unwritable_skipped": counts["unwritable"],
        "per_arch": {k: v for k, v in counts.items() if ":" in k},
        "top_refused_fields": dict(refused_fields.most_common(25)),
        "worker_restarts": worker.restarts,
        "findings": findings,
    }


def table(r: dict) -> str:
    rows = [
        ("executions", r["executions"]),
        ("executions/s", r["executions_per_s"]),
        ("refused by the validator", r["refused_by_validator"]),
        ("loaded and ran one token", r["loaded_and_ran"]),
        ("refused by llama.cpp (clean error)", r["refused_by_llama_cpp"]),
        ("signals", r["signals"]),
        ("hangs", r["hangs"]),
        ("died otherwise", r["died_otherwise"]),
        ("skipped (value not writable)", r.get("unwritable_skipped", 0)),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k:<{w}} | {v:>10} |" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--seed", type=int, default=20261130)
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=Path("fuzz_values_findings"))
    ap.add_argument("--json", type=Path, help="write the summary here too")
    ap.add_argument("--progress", type=int, default=0, help="print a line every N runs")
    a = ap.parse_args(argv)
    if a.runs is None and a.seconds is None:
        a.runs = 1000
    import tempfile

    exe = build_worker(Path(tempfile.mkdtemp(prefix="fuzz_values_exe_")))
    if a.progress and a.runs:
        total = Counter()
        done, chunk, t0 = 0, a.progress, time.monotonic()
        results = []
        while done < a.runs:
            r = fuzz(runs=min(chunk, a.runs - done), seed=a.seed + done, out=a.out, timeout=a.timeout, exe=exe)
            results.append(r)
            done += r["executions"]
            for k in (
                "executions",
                "refused_by_validator",
                "loaded_and_ran",
                "refused_by_llama_cpp",
                "signals",
                "hangs",
                "died_otherwise",
                "unwritable_skipped",
            ):
                total[k] += r[k]
            print(
                f"{done} runs, {time.monotonic() - t0:.0f} s, signals {total['signals']}, hangs {total['hangs']}, "
                f"ran {total['loaded_and_ran']}",
                flush=True,
            )
        el = time.monotonic() - t0
        r = {
            **dict(total),
            "seed": a.seed,
            "seconds": round(el, 1),
            "executions_per_s": round(total["executions"] / el, 1),
            "findings": [f for x in results for f in x["findings"]],
            "top_refused_fields": dict(
                sum((Counter(x["top_refused_fields"]) for x in results), Counter()).most_common(25)
            ),
        }
    else:
        r = fuzz(runs=a.runs, seconds=a.seconds, seed=a.seed, out=a.out, timeout=a.timeout, exe=exe)
    text = json.dumps(r, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))
    print(text)
    print(table(r))
    if a.json:
        a.json.write_text(text + "\n")
    return 1 if (r["signals"] or r["hangs"] or r.get("died_otherwise")) else 0


if __name__ == "__main__":
    sys.exit(main())
