"""Stage `quality`: every artifact against the F16 merged model on held-out text.

Method (the one upstream `llama-perplexity --kl-divergence` uses, so the two agree):
the text is tokenized once, cut into chunks of n_ctx tokens (BOS put first when the vocab
adds one), each chunk is evaluated from an empty cache, and only the second half of each
chunk is scored (every token there has at least n_ctx/2 tokens of context).

Per artifact: PPL, PPL ratio to the F16 reference, mean KLD(ref || artifact), top-1
agreement, bits per weight, file size, each statistic with a 95% interval. Tokens inside a chunk
share their context and are correlated, so the intervals come from a bootstrap over chunks (the
independent unit), paired across artifacts (the same resampled chunks for the artifact and the
reference). `cross_check_upstream` runs llama-perplexity on the same files and text and reports the
relative differences.

Default: the shipped held-out sample (convert/data/finance_eval.txt, 8,261 SmolLM2 tokens, never
seen in training) at n_ctx 512: 16 chunks, 4,080 scored tokens.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConversionError, EvalTextError, QualityGateError
from .llama_eval import LlamaLogits
from .tools import run_tool, upstream_tool


def log_softmax32(x: np.ndarray) -> np.ndarray:
    """Log-probabilities in float32 with float64 normalizers: ~25x faster than float64 over a 49k vocabulary,
    and within 4e-6 of it (KLD figures agree to 1e-6 relative)."""
    x = np.asarray(x, dtype=np.float32)
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)


@dataclass
class Reference:
    chunks: list[list[int]]
    first: int
    logprobs: list[np.ndarray]          # per chunk: (n_scored, vocab) float32 log-probs of the reference
    targets: list[np.ndarray]           # per chunk: next-token ids of the scored positions
    nll: list[float] = field(default_factory=list)   # per chunk: summed NLL of the reference


@dataclass
class ArtifactQuality:
    name: str
    file: str
    quant: str
    n_tokens_scored: int
    ppl: float
    ppl_ratio: float
    ln_ppl_ratio: float
    mean_kld: float
    top1_agreement: float
    bits_per_weight: float
    file_bytes: int
    size_ratio_vs_f16: float
    tensor_types: dict = field(default_factory=dict)
    upstream: dict | None = None
    n_chunks: int = 0
    ci95: dict = field(default_factory=dict)   # statistic -> [low, high], bootstrap over chunks
    seconds: float | None = None               # scoring time of this artifact (the F16 row: the reference pass)


def check_eval_length(n_tokens: int, n_ctx: int, name: str = "the evaluation text") -> None:
    """At least two chunks of n_ctx tokens (the same minimum llama-perplexity enforces)."""
    if n_ctx < 16:
        raise EvalTextError(f"--eval-ctx {n_ctx} is too small: use 16 or more (default 512)")
    if n_tokens < 2 * n_ctx:
        raise EvalTextError(
            f"{name} has {n_tokens} tokens; at least {2 * n_ctx} are needed for n_ctx={n_ctx} (the default text has "
            "8,261). Pass a longer --eval-text file or a smaller --eval-ctx"
        )


def make_chunks(tokens: list[int], n_ctx: int, bos: int | None, max_chunks: int | None = None) -> list[list[int]]:
    n = len(tokens) // n_ctx
    check_eval_length(len(tokens), n_ctx)
    if max_chunks:
        n = min(n, max_chunks)
    chunks = []
    for i in range(n):
        c = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        if bos is not None:
            c[0] = bos
        chunks.append(c)
    return chunks


def reference_pass(f16: Path, text: str, n_ctx: int, max_chunks: int | None = None, threads=None,
                   progress=None, keep: bool = True) -> tuple[Reference, float]:
    """Evaluate the F16 reference once; returns (reference, its perplexity). `keep=False`: perplexity only
    (the per-chunk log-probs, about 50 MB per chunk of 512 over a 49k vocabulary, are not kept)."""
    with LlamaLogits(f16, n_ctx=n_ctx, threads=threads) as m:
        tokens = m.tokenize(text, add_special=True)
        chunks = make_chunks(tokens, n_ctx, m.bos if m.add_bos else None, max_chunks)
        first = n_ctx // 2
        ref = Reference(chunks, first, [], [])
        nll, count = 0.0, 0
        for c in chunks:
            lp = log_softmax32(m.logits(c)[first:n_ctx - 1])
            tgt = np.asarray(c[first + 1:n_ctx])
            chunk_nll = -float(lp[np.arange(len(tgt)), tgt].sum(dtype=np.float64))
            nll += chunk_nll
            ref.nll.append(chunk_nll)
            count += len(tgt)
            if keep:
                ref.logprobs.append(lp)
            ref.targets.append(tgt)
            if progress is not None:
                progress.update(1)
    return ref, math.exp(nll / count)


def perplexity(path: Path, text: str, n_ctx: int, max_chunks=None, threads=None) -> float:
    """Perplexity of one GGUF on `text` with the same chunking and scoring as the report."""
    return reference_pass(Path(path), text, n_ctx, max_chunks, threads, keep=False)[1]


def _logits_source(path: Path, fmt: str, n_ctx: int, threads, adapter: Path | None = None):
    """Something with .logits(token_ids) for a GGUF file (llama.cpp) or an ONNX folder (onnxruntime)."""
    if fmt == "onnx":
        import contextlib

        from .onnx_checks import OnnxForward

        return contextlib.nullcontext(OnnxForward(path, threads))
    return LlamaLogits(path, n_ctx=n_ctx, threads=threads, adapter=adapter)


def score_artifact(path: Path, ref: Reference, threads=None, progress=None, fmt: str = "gguf",
                   adapter: Path | None = None) -> dict:
    n_ctx = len(ref.chunks[0])
    per = {"nll": [], "kld": [], "agree": [], "count": []}
    with _logits_source(path, fmt, n_ctx, threads, adapter) as m:
        for c, lp_ref, tgt in zip(ref.chunks, ref.logprobs, ref.targets):
            lp = log_softmax32(m.logits(c)[ref.first:n_ctx - 1])
            lr = lp_ref
            per["nll"].append(-float(lp[np.arange(len(tgt)), tgt].sum(dtype=np.float64)))
            per["kld"].append(float((np.exp(lr) * (lr - lp)).sum(dtype=np.float64)))
            per["agree"].append(int((lp.argmax(-1) == lr.argmax(-1)).sum()))
            per["count"].append(len(tgt))
            if progress is not None:
                progress.update(1)
    count = sum(per["count"])
    return {"n_tokens_scored": count, "ppl": math.exp(sum(per["nll"]) / count), "mean_kld": sum(per["kld"]) / count,
            "top1_agreement": sum(per["agree"]) / count, "per_chunk": per}


BOOTSTRAP_SAMPLES = 2000


def chunk_intervals(per: dict, ref_nll: list[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """95% intervals of mean KLD, top-1 agreement, PPL and PPL ratio: percentile bootstrap over chunks."""
    n = len(per["count"])
    if n < 2:
        return {}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    count = np.asarray(per["count"], dtype=np.float64)[idx].sum(1)
    nll = np.asarray(per["nll"])[idx].sum(1)
    stats = {
        "mean_kld": np.asarray(per["kld"])[idx].sum(1) / count,
        "top1_agreement": np.asarray(per["agree"], dtype=np.float64)[idx].sum(1) / count,
        "ppl": np.exp(nll / count),
        "ppl_ratio": np.exp((nll - np.asarray(ref_nll)[idx].sum(1)) / count),
    }
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in stats.items()}


def evaluate(artifacts: dict[str, dict], f16_name: str, text: str, n_ctx: int, max_chunks=None, threads=None,
             progress_factory=None) -> list[ArtifactQuality]:
    """`artifacts`: name -> {"path", "quant", "bits_per_weight", "file_bytes", "tensor_types"}; f16 first."""
    f16 = artifacts[f16_name]
    bar = progress_factory(None, "quality: F16 reference") if progress_factory else None
    t0 = time.perf_counter()
    ref, ppl_ref = reference_pass(Path(f16["path"]), text, n_ctx, max_chunks, threads, bar)
    ref_seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    rows = []
    for name, a in artifacts.items():
        bar = progress_factory(len(ref.chunks), f"quality: {name}") if progress_factory else None
        fmt = a.get("format", "gguf")
        t0 = time.perf_counter()
        if name == f16_name:            # the reference itself: its pass already gave everything
            count = [len(t) for t in ref.targets]
            per = {"nll": list(ref.nll), "kld": [0.0] * len(count), "agree": count, "count": count}
            s = {"n_tokens_scored": sum(count), "ppl": ppl_ref, "mean_kld": 0.0, "top1_agreement": 1.0,
                 "per_chunk": per}
        else:
            s = score_artifact(Path(a.get("dir") or a["path"]), ref, threads, bar, fmt, a.get("adapter"))
        if bar is not None:
            bar.close()
        rows.append(ArtifactQuality(
            name=name, file=Path(a["path"]).name, quant=a["quant"], n_tokens_scored=s["n_tokens_scored"],
            ppl=s["ppl"], ppl_ratio=s["ppl"] / ppl_ref, ln_ppl_ratio=math.log(s["ppl"] / ppl_ref),
            mean_kld=s["mean_kld"], top1_agreement=s["top1_agreement"], bits_per_weight=a["bits_per_weight"],
            file_bytes=a["file_bytes"], size_ratio_vs_f16=a["file_bytes"] / f16["file_bytes"],
            tensor_types=a.get("tensor_types", {}), n_chunks=len(ref.chunks),
            ci95=chunk_intervals(s["per_chunk"], ref.nll),
            seconds=round(ref_seconds if name == f16_name else time.perf_counter() - t0, 1),
        ))
    return rows


# ---- upstream cross-check ---------------------------------------------------------------

_UP = {
    "ppl_q": re.compile(r"Mean PPL\(Q\)\s*:\s*([0-9.eE+-]+)"),
    "ppl_base": re.compile(r"Mean PPL\(base\)\s*:\s*([0-9.eE+-]+)"),
    "ppl_ratio": re.compile(r"Mean PPL\(Q\)/PPL\(base\)\s*:\s*([0-9.eE+-]+)"),
    "mean_kld": re.compile(r"Mean\s+KLD:\s*([0-9.eE+-]+)"),
    "same_top_p": re.compile(r"Same top p:\s*([0-9.eE+-]+)"),
}


def cross_check_upstream(rows: list[ArtifactQuality], artifacts: dict[str, dict], f16_name: str, eval_file: Path,
                         n_ctx: int, work: Path, threads: int = 2, max_chunks=None) -> None:
    """Fill row.upstream with llama-perplexity --kl-divergence figures and relative differences."""
    tool = upstream_tool("llama-perplexity")
    work.mkdir(parents=True, exist_ok=True)
    base_logits = work / "kld_base.bin"
    common = ["-f", eval_file, "-c", str(n_ctx), "-b", str(n_ctx), "-t", str(threads)]
    if max_chunks:
        common += ["--chunks", str(max_chunks)]
    run_tool([tool, "-m", artifacts[f16_name]["path"], *common, "--kl-divergence-base", base_logits],
             "llama-perplexity (F16 base logits)")
    for row in rows:
        if row.name == f16_name or artifacts[row.name].get("format") == "onnx":  # llama.cpp reads GGUF only
            continue
        lora = ["--lora", artifacts[row.name]["adapter"]] if artifacts[row.name].get("adapter") else []
        proc = run_tool([tool, "-m", artifacts[row.name]["path"], *lora, *common, "--kl-divergence-base",
                         base_logits, "--kl-divergence"], f"llama-perplexity --kl-divergence ({row.name})")
        log = proc.stdout + proc.stderr
        up = {k: float(m.group(1)) for k, rx in _UP.items() if (m := rx.search(log))}
        if "same_top_p" in up:
            up["same_top_p"] /= 100.0
        if not {"ppl_ratio", "mean_kld"} <= set(up):
            raise ConversionError(f"could not parse llama-perplexity output for {row.name}:\n{log[-2000:]}")
        up["rel_diff_ppl_ratio"] = abs(row.ppl_ratio - up["ppl_ratio"]) / up["ppl_ratio"]
        up["rel_diff_mean_kld"] = abs(row.mean_kld - up["mean_kld"]) / up["mean_kld"] if up["mean_kld"] else 0.0
        up["within_5pct"] = up["rel_diff_ppl_ratio"] <= 0.05 and up["rel_diff_mean_kld"] <= 0.05
        row.upstream = up
    base_logits.unlink(missing_ok=True)


# ---- gate and rendering ------------------------------------------------------------------

def gate(rows: list[ArtifactQuality], max_kld: float | None, min_top1: float | None) -> None:
    bad = []
    for r in rows:
        if max_kld is not None and r.mean_kld > max_kld:
            bad.append(f"{r.name}: mean KLD {r.mean_kld:.4f} > --max-kld {max_kld}")
        if min_top1 is not None and r.top1_agreement < min_top1:
            bad.append(f"{r.name}: top-1 agreement {r.top1_agreement:.3f} < --min-top1 {min_top1}")
    if bad:
        raise QualityGateError(
            "quality gate failed: " + "; ".join(bad) + ". Use a higher-precision --quant type, or relax the limits"
        )


SEED_CLAIM = {"accuracy_kept": 0.98, "size_ratio": 1 / 8}


def to_json(rows: list[ArtifactQuality], meta: dict) -> dict:
    return {"schema_version": 1, **meta, "seed_claim": SEED_CLAIM, "artifacts": [asdict(r) for r in rows]}


def _ci(r: ArtifactQuality, key: str, fmt: str, scale: float = 1.0) -> str:
    lo_hi = r.ci95.get(key)
    return "" if not lo_hi else f" [{fmt.format(lo_hi[0] * scale + 0.0)}, {fmt.format(lo_hi[1] * scale + 0.0)}]"


def to_markdown(rows: list[ArtifactQuality], meta: dict) -> str:
    n_chunks = rows[0].n_chunks if rows else 0
    lines = [
        f"# Quality vs the F16 merged model ({meta.get('eval_file', '')}, n_ctx {meta.get('n_ctx')}, "
        f"{rows[0].n_tokens_scored if rows else 0} scored tokens in {n_chunks} chunks)",
        "",
        "Brackets: 95% intervals, bootstrap over chunks (paired with the reference)."
        + (f" Scored in {meta['seconds']:.0f} s." if meta.get("seconds") else ""),
        "",
        "| artifact | bits/weight | size MiB | size vs F16 | PPL | PPL ratio | mean KLD | top-1 agree | "
        "upstream PPL ratio / KLD |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        up = "" if not r.upstream else (
            f"{r.upstream['ppl_ratio']:.4f} / {r.upstream['mean_kld']:.5f} "
            f"({'ok' if r.upstream['within_5pct'] else 'DIFF > 5%'})")
        lines.append(
            f"| {r.name} | {r.bits_per_weight:.2f} | {r.file_bytes / 2**20:.1f} | {r.size_ratio_vs_f16:.3f} | "
            f"{r.ppl:.3f} | {r.ppl_ratio:.4f}{_ci(r, 'ppl_ratio', '{:.4f}')} | "
            f"{r.mean_kld:.5f}{_ci(r, 'mean_kld', '{:.5f}')} | "
            f"{100 * r.top1_agreement:.1f}%{_ci(r, 'top1_agreement', '{:.1f}', 100)} | {up} |")
    lines += ["", "Seed claim: 98% of the original accuracy at 4 bits, 1/8 of the size. Read 'accuracy kept' as "
              "1/PPL ratio and top-1 agreement; sizes are against the F16 file (1/4 at best for 4-bit from F16, "
              "1/8 only against FP32).", ""]
    for r in rows:
        if r.tensor_types:
            lines.append(f"- {r.name} tensor types: " + ", ".join(f"{k} x{v}" for k, v in r.tensor_types.items()))
    return "\n".join(lines) + "\n"
