"""`convert()`: the conversion as an explicit list of stages, each with a checkable output.

    check     inputs (checks.preflight) + tokenizer gate      -> nothing written in --out
    claim     --out made ready (outdir.py)                     -> out/.finllm-edge-convert.json (marker)
    merge     base + LoRA -> out/merged/ (HF folder, fp16)     -> merged/model.safetensors, config, tokenizer
    gguf      merged -> out/model-f16.gguf (+ f32/bf16)        -> float GGUFs
    quantize  model-f16.gguf -> out/model-<q>.gguf            -> llama-quantize outputs
    parity    F16 GGUF (llama.cpp) vs merged (torch)           -> out/parity.json
    quality   every GGUF vs F16 on held-out text (+ upstream)  -> out/quality.json, out/quality.md
    manifest  hashes, sizes, options, versions                 -> out/manifest.json (written last)

Later stages plug in by position: AWQ scaling goes between `merge` and `gguf` (it rewrites
ctx.merged_dir), ONNX export after `gguf` (it adds to ctx.artifacts). See `build_stages`.
"""

from __future__ import annotations

import errno
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import atomic
from .errors import ConversionError

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_ADAPTER = Path(__file__).resolve().parent / "adapters" / "smollm2-finance-lora"
DEFAULT_EVAL = DATA_DIR / "finance_eval.txt"   # held-out: 8,261 tokens, 16 chunks of 512
DEFAULT_CALIB = DATA_DIR / "finance_train.txt"
DEFAULT_TASKS = DATA_DIR / "finance_tasks.json"   # taskset.py, seed 16: 300 questions on 75 passages
DEFAULT_QUANTS = ("q8_0", "q4_0", "q4_k_m")


@dataclass
class ConvertOptions:
    base: Path | None = None                 # HF folder or .gguf; None = embedded SmolLM2-135M-Instruct
    lora: Path | None = None                 # PEFT adapter folder; None = shipped finance adapter
    out: Path = Path("out/convert")
    quants: list[str] = field(default_factory=lambda: list(DEFAULT_QUANTS))
    floats: list[str] = field(default_factory=lambda: ["f16"])   # f16 is always written (the reference)
    eval_file: Path | None = None            # held-out text; None = shipped finance sample
    calib_file: Path | None = None           # calibration text (AWQ / imatrix); recorded in the manifest
    eval_ctx: int = 512
    eval_chunks: int | None = None
    max_kld: float | None = None
    min_top1: float | None = None
    parity: bool = True
    greedy_tokens: int = 16
    require_greedy: bool = True              # greedy continuation must be identical; off for random tiny models
    cross_check: bool = True                 # run upstream llama-perplexity --kl-divergence too
    threads: int = 2
    merged_dtype: str = "float16"
    scan_finite: bool = True
    progress: bool = True
    awq: bool = False                        # add AWQ-scaled artifacts (awq-<quant>) beside the plain ones
    awq_grid: int = 10                       # alpha candidates in [0, 1]
    awq_clip: bool = False                   # also search per-block weight clipping
    imatrix: bool = False                    # add upstream importance-matrix artifacts (imatrix-<q>, awq-imatrix-<q>)
    bpw_budget: float | str | None = None    # with awq: a mixed-precision artifact within this bits/weight,
                                             # or "same": the size of the same recipe without it
    formats: list[str] = field(default_factory=lambda: ["gguf"])  # gguf, onnx (int4 MatMulNBits folder)
    force: bool = False                      # write into a non-empty folder convert did not make (replacing its files)
    pre_tokenizer: str | None = None         # force tokenizer.ggml.pre (still gated: must reproduce HF exactly)
    task: bool = True                        # the finance task evaluation (task_eval.py) in the quality report
    task_file: Path | None = None            # task set JSON; None = shipped convert/data/finance_tasks.json
    task_passages: int | None = None         # score only the first N passages (tests, quick looks)
    drift_ref: Path | None = None            # tuning text for the drift reference (default: the shipped adapter's)
    drift_window: int = 2048                 # the monitor's window of prompt tokens
    drift_watch_rate: float = 0.05           # false-alarm rates the watch / drift thresholds are calibrated at
    drift_rate: float = 0.01
    adapter_gguf: bool = False               # also the adapter as a GGUF LoRA + the unmerged base (f16, quants)

    def resolved(self) -> "ConvertOptions":
        from finllm_edge.models import default_model_path

        o = ConvertOptions(**asdict(self))
        o.base = Path(o.base).expanduser() if o.base else default_model_path()
        o.lora = Path(o.lora).expanduser() if o.lora else DEFAULT_ADAPTER
        o.out = Path(o.out).expanduser().resolve()
        o.eval_file = Path(o.eval_file).expanduser() if o.eval_file else DEFAULT_EVAL
        o.calib_file = Path(o.calib_file).expanduser() if o.calib_file else DEFAULT_CALIB
        o.task_file = Path(o.task_file).expanduser() if o.task_file else DEFAULT_TASKS
        o.floats = ["f16"] + [f for f in o.floats if f != "f16"]
        return o


@dataclass
class ConversionResult:
    out: Path
    merged_dir: Path
    artifacts: dict[str, dict]               # name -> {"path", "quant", "bits_per_weight", "file_bytes", ...}
    parity: dict | None
    quality: list[dict]
    quality_meta: dict
    manifest: Path
    notes: list[str]
    stages_seconds: dict[str, float]


@dataclass
class Context:
    opts: ConvertOptions
    pre: object = None                       # checks.Preflight
    merged_dir: Path | None = None
    tokenizer: object = None                 # tokenizer_gguf.TokenizerSpec
    artifacts: dict[str, dict] = field(default_factory=dict)
    parity: dict | None = None
    quality: list = field(default_factory=list)
    quality_meta: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    manifest: Path | None = None
    awq: dict = field(default_factory=dict)      # target -> {"dir", "f16", "summary"}
    imatrix: dict = field(default_factory=dict)  # "plain" or AWQ target -> imatrix file
    provenance: object = None                    # gguf_writer.Provenance, shared by every GGUF written
    hf_tokenizer: object = None                  # the HF tokenizer the gate checked (saved into merged/)
    plan: object = None                          # outdir.Plan: what this run writes in --out
    claimed: bool = False
    drift: dict = field(default_factory=dict)    # drift-ref.json (drift_stage.py)

    def bar(self, total, desc):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="t", disable=not self.opts.progress, leave=False)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], None]
    output: str                              # what it leaves behind (for --help and docs)


# ---- stages --------------------------------------------------------------------------------

def artifact_names(o: ConvertOptions) -> list[str]:
    """Names of the quantized artifacts a run makes (model-<name>.gguf), as _quant_jobs makes them."""
    names = []
    for q in o.quants:
        names.append(q)
        if q in AWQ_TARGETS:
            if o.imatrix:
                names.append(f"imatrix-{q}")
            if o.awq:
                names.append(f"awq-{q}")
                if o.imatrix:
                    names.append(f"awq-imatrix-{q}")
                if o.bpw_budget:
                    names.append(f"awq-mixed-{q}")
    return names


def awq_targets(o: ConvertOptions) -> list[str]:
    return sorted({AWQ_TARGETS[q] for q in o.quants if q in AWQ_TARGETS}) if o.awq else []


def disk_estimate(o: ConvertOptions, n_params: int, base) -> dict:
    """Peak disk use of this run (checks.estimate_disk with everything the options add)."""
    from .checks import estimate_disk

    n_vocab = int(getattr(base.config, "vocab_size", 0) or 0)
    eval_tokens = o.eval_file.stat().st_size // 3 if o.eval_file and o.eval_file.exists() else 0
    if o.eval_chunks:
        eval_tokens = min(eval_tokens, o.eval_chunks * o.eval_ctx)
    awq_quants = [q for q in o.quants if q in AWQ_TARGETS] if o.awq else []
    return estimate_disk(
        n_params, o.floats + o.quants, n_vocab=n_vocab, tokenizer_bytes=40 * n_vocab, awq_targets=awq_targets(o),
        awq_outputs=awq_quants, imatrix=o.imatrix, mixed=awq_quants if o.bpw_budget else (),
        onnx="onnx" in o.formats, eval_tokens=eval_tokens, cross_check=o.cross_check,
        merged_bytes_per_param={"float32": 4.0}.get(o.merged_dtype, 2.0),
        task_base=o.task and getattr(base, "kind", "hf") != "gguf")


def stage_check(ctx: Context) -> None:
    from . import outdir, tokenizer_gguf
    from .checks import preflight

    o = ctx.opts
    texts = {"--eval": o.eval_file, "--calib": o.calib_file}
    if o.drift_ref:
        texts["--drift-ref"] = Path(o.drift_ref)
    ctx.plan = outdir.plan_for(o, awq_targets(o), artifact_names(o))
    ctx.pre = preflight(o.base, o.lora, o.out, o.floats + o.quants, texts, o.scan_finite, ctx.bar, plan=ctx.plan,
                        force=o.force, disk_estimate=lambda n, base: disk_estimate(o, n, base))
    ctx.notes += ctx.pre.notes
    pre = ctx.pre
    tok = pre.base.load_tokenizer()
    if pre.base.kind == "gguf":
        spec = tokenizer_gguf.from_gguf(pre.base.path)
    else:
        spec = tokenizer_gguf.from_hf(tok, int(pre.base.config.vocab_size))
    extra = {"--eval text": o.eval_file.read_text(encoding="utf-8", errors="replace"),
             "--calib text": o.calib_file.read_text(encoding="utf-8", errors="replace")}
    tokenizer_gguf.gate(tok, spec, pre.arch, pre.base.config, extra, override=o.pre_tokenizer,
                        prefer=(str(getattr(pre.base.config, "model_type", "")),) + tokenizer_gguf.PREFER)
    ctx.tokenizer, ctx.hf_tokenizer = spec, tok
    _check_eval_inputs(o, tok, extra["--eval text"])
    from .adapter_gguf import check_combination

    check_combination(o, pre.adapter)
    ctx.notes += spec.notes
    if pre.out_inspection.replace:
        ctx.notes.append(f"--force: will replace {', '.join(pre.out_inspection.replace)}")


def _check_eval_inputs(o: ConvertOptions, tok, eval_text: str) -> None:
    """Before any work: the --eval-text is long enough for --eval-ctx (the tokenizer gate has just shown that
    llama.cpp makes the same ids as this tokenizer) and the task set is readable."""
    from .quality import check_eval_length

    n = len(tok(eval_text, add_special_tokens=True)["input_ids"])
    check_eval_length(n, o.eval_ctx, f"--eval-text {o.eval_file}")
    if o.task:
        from .task_eval import load_taskset

        load_taskset(o.task_file)


def stage_claim(ctx: Context) -> None:
    from . import outdir

    ctx.notes += outdir.claim(ctx.pre.out_inspection, ctx.plan)
    ctx.claimed = True


def stage_merge(ctx: Context) -> None:
    from .merge import write_merged

    base, adapter = ctx.pre.base, ctx.pre.adapter
    merged = ctx.opts.out / "merged"
    bar = ctx.bar(len(base.tensors.names()), "merge")
    write_merged(base, adapter, merged, ctx.opts.merged_dtype, bar)
    bar.close()
    ctx.hf_tokenizer.save_pretrained(merged)
    ctx.merged_dir = merged


def stage_gguf(ctx: Context) -> None:
    from finllm_edge import __version__
    from finllm_edge.native.fetch import llama_version_string

    from .gguf_writer import Provenance, write_gguf
    from .manifest import combined_sha256, sha256_file
    from .quantize import gguf_weight_stats, tensor_type_counts

    pre = ctx.pre
    prov = Provenance(
        base_name=pre.base.path.name if pre.base.kind == "gguf" else pre.base.path.name,
        base_sha256=combined_sha256(pre.base.files) if len(pre.base.files) > 1 else sha256_file(pre.base.files[0]),
        adapter_name=Path(pre.adapter.folder).name, adapter_sha256=combined_sha256(pre.adapter.files),
        finllm_edge_version=__version__, llama_cpp=llama_version_string(),
    )
    ctx.provenance = prov
    for ft in ctx.opts.floats:
        path = ctx.opts.out / f"model-{ft}.gguf"
        bar = ctx.bar(None, f"gguf {ft}")
        write_gguf(ctx.merged_dir, path, ft, pre.arch, pre.base.config, ctx.tokenizer, prov, bar)
        bar.close()
        ctx.artifacts[ft] = {"path": str(path), "quant": ft.upper(), "tool": "finllm_edge_convert.gguf_writer",
                             "tensor_types": tensor_type_counts(path), **gguf_weight_stats(path)}


AWQ_TARGETS = {"q4_0": "q4_0", "q4_k_m": "q4_k_m", "q4_k_s": "q4_k_m"}  # quant -> AWQ search grid


def stage_awq(ctx: Context) -> None:
    from .awq import AWQOptions
    from .awq_stage import scale_model
    from .gguf_writer import write_gguf

    o = ctx.opts
    targets = sorted({AWQ_TARGETS[q] for q in o.quants if q in AWQ_TARGETS})
    if not targets:
        raise ConversionError(f"--awq needs a 4-bit --quant among {sorted(AWQ_TARGETS)}; got {o.quants}")
    calib = o.calib_file.read_text(encoding="utf-8")
    for t in targets:
        from tqdm import tqdm

        def bars(**kw):
            return tqdm(disable=not o.progress, leave=False, **kw)

        res = scale_model(ctx.merged_dir, o.out / f"merged-awq-{t}", calib,
                          AWQOptions(target=t, grid=o.awq_grid, clip=o.awq_clip), bars)
        f16 = o.out / ".work" / f"awq-{t}-f16.gguf"
        f16.parent.mkdir(parents=True, exist_ok=True)
        write_gguf(res.scaled_dir, f16, "f16", ctx.pre.arch, ctx.pre.base.config, ctx.tokenizer, ctx.provenance, None)
        ctx.awq[t] = {"dir": str(res.scaled_dir), "f16": str(f16), "summary": res.summary}
        ctx.notes.append(f"AWQ ({t}): {res.summary}")


def stage_imatrix(ctx: Context) -> None:
    from .quantize import compute_imatrix

    o = ctx.opts
    sources = {"plain": ctx.artifacts["f16"]["path"], **{t: a["f16"] for t, a in ctx.awq.items()}}
    for key, src in sources.items():
        ctx.imatrix[key] = str(compute_imatrix(Path(src), o.calib_file, o.out / ".work" / f"imatrix-{key}.gguf",
                                               o.threads))


def _quant_jobs(ctx: Context) -> list[tuple[str, str, Path, Path | None, list[str]]]:
    """(artifact name, quant, source F16, imatrix, extra llama-quantize args) for every artifact asked for."""
    o = ctx.opts
    f16 = Path(ctx.artifacts["f16"]["path"])
    jobs = []
    for q in o.quants:
        jobs.append((q, q, f16, None, []))
        if "plain" in ctx.imatrix and q in AWQ_TARGETS:
            jobs.append((f"imatrix-{q}", q, f16, Path(ctx.imatrix["plain"]), []))
        t = AWQ_TARGETS.get(q)
        if t in ctx.awq:
            src = Path(ctx.awq[t]["f16"])
            jobs.append((f"awq-{q}", q, src, None, []))
            if t in ctx.imatrix:
                jobs.append((f"awq-imatrix-{q}", q, src, Path(ctx.imatrix[t]), []))
            if o.bpw_budget:
                jobs.append((f"awq-mixed-{q}", q, src, Path(ctx.imatrix[t]) if t in ctx.imatrix else None,
                             ["mixed"]))
    return jobs


def stage_quantize(ctx: Context) -> None:
    from .quantize import quantize

    jobs = _quant_jobs(ctx)
    bar = ctx.bar(len(jobs), "quantize")
    for name, q, src, imat, extra in jobs:
        bar.set_postfix_str(name)
        if extra == ["mixed"]:
            extra = _mixed_precision_args(ctx, q, src, imat)
        out = ctx.opts.out / f"model-{name}.gguf"
        info = quantize(src, out, q, ctx.opts.threads, imatrix=imat, extra_args=extra)
        ctx.artifacts[name] = {"path": str(out), "quant": info.pop("upstream_type"), **info}
        if imat or src != Path(ctx.artifacts["f16"]["path"]):
            ctx.artifacts[name]["recipe"] = {"awq": name.startswith("awq"), "imatrix": bool(imat),
                                             "llama_quantize_args": [str(a) for a in extra]}
        bar.update(1)
    bar.close()
    for a in ctx.awq.values():           # the scaled F16 GGUFs were intermediates
        Path(a["f16"]).unlink(missing_ok=True)


def stage_adapter(ctx: Context) -> None:
    """--adapter-gguf: the unmerged base (F16 + each --quant) and the adapter as a GGUF LoRA; quality rows
    "base-<q>+adapter" (the base file with the adapter applied at run time) next to the merged ones."""
    import shutil

    from . import adapter_gguf as ag
    from .gguf_writer import write_gguf
    from .quantize import gguf_weight_stats, quantize, tensor_type_counts

    o, pre = ctx.opts, ctx.pre
    work = o.out / ".work"
    bar = ctx.bar(len(pre.base.tensors.names()), "base")
    base_dir = ag.write_base_folder(pre.base, work / ag.BASE_DIR, o.merged_dtype, bar)
    bar.close()
    f16 = o.out / "base-f16.gguf"
    write_gguf(base_dir, f16, "f16", pre.arch, pre.base.config, ctx.tokenizer, ag.base_provenance(ctx.provenance))
    shutil.rmtree(base_dir)
    adapter = o.out / ag.ADAPTER_FILE
    info = ag.write_adapter_gguf(pre.adapter, pre.arch, pre.base.config, adapter, ctx.provenance)
    bases = {"f16": (f16, {"quant": "F16", "tensor_types": tensor_type_counts(f16), **gguf_weight_stats(f16)})}
    for q in o.quants:
        out = o.out / f"base-{q}.gguf"
        qi = quantize(f16, out, q, o.threads)
        bases[q] = (out, {"quant": qi.pop("upstream_type"), **qi})
    for name, (path, a) in bases.items():
        ctx.artifacts[f"base-{name}+adapter"] = {
            **a, "path": str(path), "adapter": str(adapter), "engine_options": {"adapters": [str(adapter)]},
            "quant": f"{a['quant']} + F16 LoRA (run time)",
            "file_bytes": int(a["file_bytes"]) + info["file_bytes"], "base_file_bytes": int(a["file_bytes"]),
            "adapter_file_bytes": info["file_bytes"]}
    ctx.notes.append(f"--adapter-gguf: {adapter.name} ({info['n_tensors']} adapted weights, rank <= "
                     f"{info['rank_max']}, {info['file_bytes'] / 2**20:.1f} MiB) for base-{{{', '.join(bases)}}}.gguf; "
                     "sizes of the +adapter rows count base + adapter")


def _mixed_precision_args(ctx: Context, q: str, src: Path, imat: Path | None) -> list[str]:
    """Plan a mixed-precision variant of recipe (src, imat, q) within the bits/weight budget
    (see mixed_precision.py); returns the winner's llama-quantize arguments."""
    from . import mixed_precision as mp
    from . import quality
    from .quantize import gguf_weight_stats, quantize

    o = ctx.opts
    work = o.out / ".work"
    probe = work / f"probe-{q}.gguf"
    quantize(src, probe, q, o.threads, imatrix=imat)
    types, total_bits, n_params = mp.probe_types(probe)
    probe.unlink(missing_ok=True)
    budget = total_bits / n_params if o.bpw_budget == "same" else float(o.bpw_budget)
    calib = o.calib_file.read_text(encoding="utf-8")
    sens = mp.tensor_sensitivity(Path(ctx.awq[AWQ_TARGETS[q]]["dir"]), calib)
    plans = mp.candidates(sens, types, total_bits, n_params, budget)

    def calib_kld(plan: mp.Plan) -> float:
        cand = work / f"mixed-{q}-candidate.gguf"
        quantize(src, cand, q, o.threads, imatrix=imat, extra_args=plan.args())
        arts = {"f16": ctx.artifacts["f16"], "candidate": {"path": str(cand), "quant": q, **gguf_weight_stats(cand)}}
        rows = quality.evaluate(arts, "f16", calib, o.eval_ctx, MIXED_SCORE_CHUNKS, o.threads)
        cand.unlink(missing_ok=True)
        return rows[1].mean_kld

    label, plan, scores = mp.choose(plans, calib_kld) if len(plans) > 1 else (plans[0][0], plans[0][1], {})
    by_type: dict[str, int] = {}
    for t in plan.types.values():
        by_type[t.upper()] = by_type.get(t.upper(), 0) + 1
    tried = ", ".join(f"{k}: KLD {v:.4f}" for k, v in scores.items())
    ctx.notes.append(f"mixed precision {q} within {budget:.3f} bits/weight: {label}, changed {by_type or 'nothing'}"
                     + (f" (calibration KLD vs F16 of the candidates: {tried})" if tried else ""))
    return plan.args()


MIXED_SCORE_CHUNKS = 8  # calibration chunks (of eval_ctx tokens) that score mixed-precision candidates


def stage_onnx(ctx: Context) -> None:
    """int4 ONNX (MatMulNBits, block 32, symmetric, accuracy_level 4) for onnxruntime(-genai), from the
    AWQ-scaled model (Q4_0 grid, which MatMulNBits int4 shares) when --awq ran, else from merged/."""
    from .onnx_export import export_onnx

    src = Path(ctx.awq["q4_0"]["dir"]) if "q4_0" in ctx.awq else ctx.merged_dir
    out = ctx.opts.out / "onnx-int4"
    entry = export_onnx(src, out, precision="int4", overwrite=True)
    ctx.artifacts["onnx-int4"] = {
        "path": str(out / "model.onnx"), "dir": str(out), "format": "onnx", "quant": "MatMulNBits int4",
        "bits_per_weight": entry["bits_per_weight"], "file_bytes": entry["size_bytes"],
        "n_params": entry["n_params"], "source": str(src), "files": entry["files"], "checks": entry["checks"],
        "versions": entry["versions"],
    }


def stage_parity(ctx: Context) -> None:
    from .parity import check_parity, enforce

    o = ctx.opts
    res = check_parity(ctx.merged_dir, Path(ctx.artifacts["f16"]["path"]), o.greedy_tokens, o.require_greedy,
                       threads=o.threads)
    ctx.parity = asdict(res)
    atomic.write_json(o.out / "parity.json", ctx.parity)
    enforce(res, o.require_greedy)


def stage_quality(ctx: Context) -> None:
    from . import quality

    o = ctx.opts
    text = o.eval_file.read_text(encoding="utf-8")
    t0 = time.perf_counter()
    rows = quality.evaluate(ctx.artifacts, "f16", text, o.eval_ctx, o.eval_chunks, o.threads, ctx.bar)
    seconds = round(time.perf_counter() - t0, 1)
    if o.cross_check:
        t1 = time.perf_counter()
        quality.cross_check_upstream(rows, ctx.artifacts, "f16", o.eval_file, o.eval_ctx, o.out / ".work",
                                     o.threads, o.eval_chunks)
        ctx.notes.append(f"quality: {rows[0].n_tokens_scored} scored tokens x {len(rows)} artifacts in {seconds} s; "
                         f"upstream llama-perplexity cross-check {time.perf_counter() - t1:.0f} s")
    meta = {"eval_file": str(o.eval_file), "n_ctx": o.eval_ctx, "reference": "model-f16.gguf (F16 merged model)",
            "method": "second half of each n_ctx chunk scored, as llama-perplexity; 95% intervals: bootstrap over "
                      "chunks, paired with the reference",
            "n_chunks": rows[0].n_chunks if rows else 0, "n_tokens_scored": rows[0].n_tokens_scored if rows else 0,
            "seconds": seconds}
    if ctx.pre.base.kind == "gguf":   # the base without the adapter, same text and method
        meta["base_model_ppl"] = quality.perplexity(ctx.pre.base.path, text, o.eval_ctx, o.eval_chunks, o.threads)
        meta["merged_f16_ppl"] = next(r.ppl for r in rows if r.name == "f16")
    atomic.write_json(o.out / "quality.json", quality.to_json(rows, meta))
    atomic.write_text(o.out / "quality.md", quality.to_markdown(rows, meta))
    ctx.quality = [asdict(r) for r in rows]
    ctx.quality_meta = meta
    work = o.out / ".work"
    if work.exists() and not any(work.iterdir()):
        work.rmdir()
    for r in rows:
        ctx.artifacts[r.name].update({k: getattr(r, k) for k in ("ppl", "ppl_ratio", "mean_kld", "top1_agreement")})
    quality.gate(rows, o.max_kld, o.min_top1)


def stage_report(ctx: Context) -> None:
    from .quality_report import finish_report

    finish_report(ctx)


def stage_manifest(ctx: Context) -> None:
    from finllm_edge.native.fetch import llama_identity

    from .manifest import build_manifest

    o, pre = ctx.opts, ctx.pre
    inputs = {"base": pre.base.files, "adapter": pre.adapter.files, "eval": [o.eval_file], "calib": [o.calib_file]}
    if o.task:
        inputs["task"] = [o.task_file]
    outputs = [dict(a) for a in ctx.artifacts.values()]
    outputs += [{"path": str(o.out / n)} for n in ("parity.json", "quality.json", "quality.md", "quality.png",
                                                   "task_answers.json", "adapter-f16.gguf")
                if (o.out / n).exists()]
    if ctx.drift:
        outputs += [{"path": str(o.out / n), "kind": "drift_reference"}
                    for n in ("drift-ref.fedrift", "drift-ref.json")]
        inputs["drift_ref_text"] = [Path(ctx.drift["text"])]
    merged = sorted(p for p in ctx.merged_dir.iterdir() if p.is_file())
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()}
    options["tokenizer"] = ctx.tokenizer.summary() if ctx.tokenizer else None
    m = build_manifest(inputs=inputs, outputs=outputs, out_root=o.out, options=options,
                       llama_identity=llama_identity(), stages=ctx.seconds, notes=ctx.notes, merged_files=merged)
    m["parity"] = ctx.parity
    m["quality"] = {k: v for k, v in ctx.quality_meta.items() if k.endswith("_ppl")}
    m["n_params"] = pre.n_params
    m["disk_estimate_bytes"] = pre.disk_breakdown   # peak estimate checked against free space before the run
    m["architecture"] = pre.arch.name
    m["drift"] = ctx.drift or None
    ctx.manifest = o.out / "manifest.json"
    atomic.write_json(ctx.manifest, m)


def build_stages(opts: ConvertOptions) -> list[Stage]:
    stages = [
        Stage("check", stage_check, "input checks, tokenizer gate (nothing written)"),
        Stage("claim", stage_claim, ".finllm-edge-convert.json; the earlier run's files removed"),
        Stage("merge", stage_merge, "merged/ (HF folder, fp16)"),
        Stage("gguf", stage_gguf, "model-f16.gguf (+ f32/bf16)"),
    ]
    if opts.awq:
        stages.append(Stage("awq", stage_awq, "merged-awq-<grid>/ (scaled float model, for GGUF and ONNX)"))
    if opts.imatrix:
        stages.append(Stage("imatrix", stage_imatrix, ".work/imatrix-*.gguf (upstream llama-imatrix)"))
    if opts.quants:
        stages.append(Stage("quantize", stage_quantize, "model-<quant>.gguf (+ awq-/imatrix- variants)"))
    if opts.adapter_gguf:
        stages.append(Stage("adapter", stage_adapter, "adapter-f16.gguf, base-f16.gguf, base-<quant>.gguf"))
    if "onnx" in opts.formats:
        stages.append(Stage("onnx", stage_onnx, "onnx-int4/ (model.onnx + data, genai_config.json, tokenizer)"))
    from .drift_stage import stage_drift

    stages.append(Stage("drift", stage_drift, "drift-ref.fedrift, drift-ref.json (drift reference, calibrated)"))
    if opts.parity:
        stages.append(Stage("parity", stage_parity, "parity.json"))
    stages.append(Stage("quality", stage_quality, "quality.json, quality.md"))
    stages.append(Stage("report", stage_report, "finance task in quality.json/.md, task_answers.json, quality.png"))
    stages.append(Stage("manifest", stage_manifest, "manifest.json"))
    return stages


def run_stages(ctx: Context, stages: list[Stage], log: Callable[[str], None] | None = None) -> Context:
    """Run the stages in order. --out is untouched until `claim` (after `check`), so a refused run leaves an
    earlier run's folder exactly as it was; once claimed, the marker records what the run wrote."""
    from . import outdir

    out = ctx.opts.out
    ok = False
    try:
        for st in stages:
            t0 = time.perf_counter()
            if log:
                log(f"[{st.name}] ...")
            try:
                st.run(ctx)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                    from .errors import InsufficientDiskError

                    raise InsufficientDiskError(
                        f"stage {st.name}: no room to write ({exc.strerror}). Partial files were left under temporary "
                        f"names and nothing in {out} looks finished; free space (or raise the file-size limit) "
                        "and rerun"
                    ) from exc
                raise
            ctx.seconds[st.name] = round(time.perf_counter() - t0, 2)
            if log:
                log(f"[{st.name}] done in {ctx.seconds[st.name]:.1f}s")
        ok = True
    finally:
        if ctx.claimed:
            try:
                outdir.finish(out, ctx.plan, "finished" if ok else "failed")
            except OSError:
                if ok:
                    raise
    return ctx


def convert(opts: ConvertOptions, log: Callable[[str], None] | None = None) -> ConversionResult:
    """Run the whole conversion. Raises a ConversionError subclass on any failure."""
    o = opts.resolved()
    if "f16" not in o.floats:
        raise ConversionError("the F16 GGUF is the reference for parity and quality; it cannot be left out")
    ctx = run_stages(Context(o), build_stages(o), log)
    return ConversionResult(o.out, ctx.merged_dir, ctx.artifacts, ctx.parity, ctx.quality, ctx.quality_meta,
                            ctx.manifest,
                            ctx.notes, ctx.seconds)


def summary_table(res: ConversionResult) -> str:
    rows = ["| artifact | type | size MiB | bits/weight | PPL ratio | mean KLD | top-1 | tensor types |",
            "|---|---|---|---|---|---|---|---|"]
    for name, a in res.artifacts.items():
        def f(k, fmt, a=a):
            return fmt.format(a[k]) if a.get(k) is not None else "-"
        types = ", ".join(f"{k}:{v}" for k, v in a.get("tensor_types", {}).items())
        rows.append(f"| {name} | {a['quant']} | {a['file_bytes'] / 2**20:.1f} | {a['bits_per_weight']:.2f} | "
                    f"{f('ppl_ratio', '{:.4f}')} | {f('mean_kld', '{:.5f}')} | "
                    f"{f('top1_agreement', '{:.1%}')} | {types} |")
    lines = rows
    if res.parity:
        p = res.parity
        lines.append("")
        lines.append(f"parity (F16 GGUF vs merged torch): max |dlogit| {p['max_abs_logit_diff']:.4f}, mean KLD "
                     f"{p['mean_kld']:.2e}, greedy {p['greedy_tokens']} tokens identical: {p['greedy_identical']} "
                     f"-> {'PASS' if p['passed'] else 'FAIL'}")
    if res.quality_meta.get("base_model_ppl"):
        lines.append(f"held-out PPL: base {res.quality_meta['base_model_ppl']:.3f} -> merged F16 "
                     f"{res.quality_meta['merged_f16_ppl']:.3f}")
    task = res.quality_meta.get("task")
    if task:
        lines.append("finance task exact match (accuracy kept vs F16): " + ", ".join(
            f"{r['name']} {r['exact_match']:.1%}" + (f" ({r['accuracy_kept']:.1%})" if r["accuracy_kept"] else "")
            for r in task["artifacts"] if r["exact_match"] is not None) + " -- intervals in quality.md")
    lines.append("stages (s): " + ", ".join(f"{k} {v}" for k, v in res.stages_seconds.items()))
    for n in res.notes:
        lines.append(f"note: {n}")
    lines.append(f"out: {res.out}  (merged/: HF folder; manifest.json: hashes + versions)")
    return "\n".join(lines)
