"""AWQ as a conversion stage: merged/ -> merged-awq-<target>/ (float, scaled) -> GGUF quants.

The scaled model computes the same function as merged/ (AWQ folds s and 1/s), so the
reference for quality stays model-f16.gguf made from merged/. The scaled folder is what both
back-ends take: the GGUF writer (here) and the ONNX export (its `hf_dir`).
Mixed precision within a bits-per-weight budget lives in mixed_precision.py.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from . import atomic
from .awq import AWQOptions, AWQResult, run_awq


@dataclass
class AWQStageResult:
    target: str
    scaled_dir: Path
    summary: dict
    alphas: dict


def scale_model(merged_dir: Path, out_dir: Path, calib_text: str, opts: AWQOptions,
                progress_factory=None) -> AWQStageResult:
    """Run AWQ on the merged model and save the scaled float model as an HF folder, atomically."""
    import torch
    from transformers import AutoTokenizer

    from .hf_loader import load_hf_model

    model = load_hf_model(merged_dir, torch.float32)
    tok = AutoTokenizer.from_pretrained(merged_dir)
    res: AWQResult = run_awq(model, tok, calib_text, opts, progress_factory)
    tmp = out_dir.with_name(out_dir.name + atomic.PARTIAL_TAG + "dir")
    if tmp.exists():
        shutil.rmtree(tmp)
    # float32: the fold is exact in float32; the GGUF writer rounds once, to the chosen float type
    model.to(torch.float32).save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    record = {"target": opts.target, "options": asdict(opts), "summary": res.summary(), "alphas": res.alphas,
              "loss_plain": res.loss_before, "loss_awq": res.loss_after, "clip_ratios": res.clip_ratios}
    (tmp / "awq.json").write_text(json.dumps(record, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    atomic.fsync_dir(out_dir.parent)
    return AWQStageResult(opts.target, out_dir, res.summary(), res.alphas)
