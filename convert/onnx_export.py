"""ONNX export: HF folder -> onnxruntime-genai model folder (int4 MatMulNBits or fp32).

Uses onnxruntime-genai's model builder (its Python API, the same code as
`python -m onnxruntime_genai.models.builder`) for the graph, the KV cache, the 4-bit weights,
`genai_config.json` and the tokenizer files; this module adds what it lacks: typed options,
an atomic output folder, checks after every export and a manifest entry.

    from finllm_edge_convert.onnx_export import export_onnx
    entry = export_onnx(merged_hf_dir, out / "onnx-int4")        # int4, block 32, accuracy 4, symmetric
    manifest["artifacts"].append(entry)

Stages: options -> builder into `.NAME.tmp-*` beside out_dir -> structure check (onnx.checker by
path + MatMulNBits settings) -> parity checks against the HF model -> fsync -> rename -> manifest.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from finllm_edge.errors import ConversionError, ModelNotFoundError, UnsupportedArchitectureError

from . import onnx_checks

# HF architecture -> note; the builder supports more, these are the ones finllm-edge tests.
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "Llama, SmolLM2 (tied embeddings)",
    "Qwen2ForCausalLM": "Qwen2 (q/k/v biases)",
}
PRECISIONS = ("int4", "fp32")
ALGOS = ("default", "rtn", "k_quant")
GREEDY_PROMPT = onnx_checks.PARITY_TOKENS[:8]
GREEDY_TOKENS = 16


@dataclass(frozen=True)
class OnnxExportOptions:
    precision: str = "int4"
    block_size: int = 32
    accuracy_level: int = 4  # int8 activations in MatMulNBits: what ARM dotprod computes in
    symmetric: bool = True
    algo: str = "default"  # builder's algo_config: default (RTN), rtn, k_quant
    lm_head_int8: bool = False  # keep the last MatMul (lm_head, tied embedding) at 8 bits
    execution_provider: str = "cpu"

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConversionError(f"ONNX precision {self.precision!r} is not one of {PRECISIONS}")
        if self.block_size not in (16, 32, 64, 128, 256):
            raise ConversionError(f"block_size {self.block_size} must be 16, 32, 64, 128 or 256")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            raise ConversionError(f"accuracy_level {self.accuracy_level} must be 0..4 (4 = int8 compute)")
        if self.algo not in ALGOS:
            raise ConversionError(f"algo {self.algo!r} must be one of {ALGOS}")
        if self.precision == "int4" and not self.symmetric:
            # builder 0.18 writes a uint8 Reshape into the float Gather of the shared embedding, which
            # onnxruntime refuses to load; say so instead of producing a folder that cannot run.
            raise ConversionError("asymmetric int4 (symmetric=False) makes onnxruntime-genai 0.18 write an "
                                  "unloadable model for tied-embedding models; use symmetric=True")

    def builder_options(self) -> list[str]:
        if self.precision != "int4":
            return []
        opts = [f"block_size={self.block_size}", f"accuracy_level={self.accuracy_level}",
                f"is_symmetric={'true' if self.symmetric else 'false'}"]
        if self.algo != "default":
            opts.append(f"algo_config={self.algo}")
        if self.lm_head_int8:
            opts.append("matmul_mixed_precision=last_matmul:int8")
        return opts


def _versions() -> dict:
    out = {}
    for pkg in ("onnx", "onnxruntime", "onnxruntime-genai", "torch", "transformers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


from finllm_edge.hashing import sha256_file as _sha256  # noqa: E402


def _check_source(hf_dir: Path) -> dict:
    import json

    cfg_path = hf_dir / "config.json"
    if not cfg_path.is_file():
        raise ModelNotFoundError(f"{hf_dir} has no config.json; pass the merged HF model folder")
    if not (hf_dir / "tokenizer.json").is_file() and not (hf_dir / "tokenizer.model").is_file():
        raise ModelNotFoundError(f"{hf_dir} has no tokenizer files; save the tokenizer next to the model")
    config = json.loads(cfg_path.read_text())
    arch = (config.get("architectures") or [None])[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"{hf_dir}: architecture {arch!r} is not supported for ONNX export "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
        )
    return config


def _run_builder(hf_dir: Path, out: Path, opts: OnnxExportOptions, cache: Path) -> str:
    """Run the model builder in-process; return its console output (kept for error messages)."""
    try:
        from onnxruntime_genai.models.builder import create_model, parse_extra_options
    except ImportError as exc:
        raise ConversionError(
            f"onnxruntime-genai's model builder is not importable ({exc}); "
            "pip install onnxruntime-genai==0.18.0 onnx onnx_ir onnxscript"
        ) from exc
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            extra = parse_extra_options(None, str(hf_dir), str(out), opts.precision, opts.execution_provider,
                                        str(cache), opts.builder_options())
            create_model(None, str(hf_dir), str(out), opts.precision, opts.execution_provider, str(cache), **extra)
    except Exception as exc:
        tail = "\n".join(log.getvalue().splitlines()[-15:])
        raise ConversionError(f"ONNX model builder failed on {hf_dir}: {type(exc).__name__}: {exc}\n{tail}") from exc
    return log.getvalue()


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parity(hf_dir: Path, tmp: Path, opts: OnnxExportOptions, scratch: Path) -> dict:
    """fp32 logits parity (of this export, or of a scratch fp32 export) + greedy agreement vs HF."""
    checks: dict = {}
    if opts.precision == "fp32":
        fp32_dir = tmp
    else:
        fp32_dir = scratch / "fp32"
        _run_builder(hf_dir, fp32_dir, OnnxExportOptions(precision="fp32"), scratch / "cache")
    checks["fp32_logits_parity"] = onnx_checks.check_logits_parity(fp32_dir, hf_dir)
    reference = onnx_checks.hf_greedy(hf_dir, GREEDY_PROMPT, GREEDY_TOKENS)
    greedy = onnx_checks.greedy_agreement(tmp, GREEDY_PROMPT, reference)
    checks["greedy_vs_hf_fp32"] = {k: greedy[k] for k in
                                   ("n_tokens", "identical_prefix", "agreement_pct", "teacher_forced_top1_pct")}
    return checks


def export_onnx(hf_dir, out_dir, precision: str = "int4", block_size: int = 32, accuracy_level: int = 4,
                symmetric: bool = True, algo: str = "default", lm_head_int8: bool = False,
                checks: bool = True, overwrite: bool = False, min_greedy_agreement_pct: float | None = None,
                options: OnnxExportOptions | None = None) -> dict:
    """Export `hf_dir` to an onnxruntime-genai folder at `out_dir`; return its manifest entry.

    checks=True (the default, used by `finllm-edge convert`) also runs the fp32 logits parity and
    the greedy agreement of this export with the HF model; `min_greedy_agreement_pct` turns the
    latter (teacher-forced top-1 %) into a gate. The structure check always runs.
    Raises ConversionError (and subclasses) or ModelNotFoundError; never leaves a partial `out_dir`.
    """
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    opts = options or OnnxExportOptions(precision, block_size, accuracy_level, symmetric, algo, lm_head_int8)
    opts.validate()
    config = _check_source(hf_dir)
    if opts.lm_head_int8 and config.get("tie_word_embeddings"):
        # measured with onnxruntime-genai's builder here: the shared embedding then reads the int8
        # lm_head weight before it is defined, and the graph fails onnx.checker
        raise ConversionError("lm_head_int8 is not supported for models with tied input/output embeddings "
                              "(e.g. SmolLM2): the onnxruntime-genai builder writes an invalid graph for it")
    if out_dir.exists() and not overwrite:
        raise ConversionError(f"{out_dir} already exists; remove it or pass overwrite=True")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp = work / "model"
    t0 = time.perf_counter()
    try:
        _run_builder(hf_dir, tmp, opts, work / "cache")
        for leftover in tmp.glob("*.tmp"):
            leftover.unlink()
        structure = _structure(tmp, opts)
        results = {"structure": structure}
        if checks:
            results.update(_parity(hf_dir, tmp, opts, work))
            agree = results["greedy_vs_hf_fp32"]["teacher_forced_top1_pct"]
            if min_greedy_agreement_pct is not None and agree < min_greedy_agreement_pct:
                raise ConversionError(
                    f"ONNX {opts.precision} greedy agreement with the HF model is {agree:.1f}% "
                    f"(< {min_greedy_agreement_pct}%); try lm_head_int8=True or algo='k_quant'"
                )
        _fsync_tree(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest_entry(out_dir, hf_dir, config, opts, results, time.perf_counter() - t0)


def _structure(folder: Path, opts: OnnxExportOptions) -> dict:
    if opts.precision == "fp32":
        return onnx_checks.check_structure(folder, bits=None)
    return onnx_checks.check_structure(folder, bits=4, block_size=opts.block_size,
                                       accuracy_level=opts.accuracy_level, lm_head_bits=8 if opts.lm_head_int8 else 4)


def manifest_entry(out_dir: Path, hf_dir: Path, config: dict, opts: OnnxExportOptions, checks: dict,
                   seconds: float) -> dict:
    from finllm_edge.onnx_validate import validate_model_dir

    info = validate_model_dir(out_dir)
    files = {p.name: {"sha256": _sha256(p), "size_bytes": p.stat().st_size}
             for p in sorted(out_dir.iterdir()) if p.is_file()}
    return {
        "format": "onnx",
        "name": out_dir.name,
        "path": str(out_dir),
        "precision": opts.precision,
        "model_type": f"onnx-{opts.precision}",
        "architecture": (config.get("architectures") or [None])[0],
        "source": str(hf_dir),
        "model_sha256": files[info.model_path.name]["sha256"],
        "size_bytes": info.size_bytes,
        "n_params": info.n_params,
        "bits_per_weight": round(info.bits_per_weight, 4),
        "files": files,
        "options": asdict(opts),
        "checks": checks,
        "export_seconds": round(seconds, 2),
        "versions": _versions(),
    }
