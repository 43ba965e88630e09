"""AWQ as a conversion stage: merged/ -> merged-awq-<target>/ (float, scaled) -> GGUF quants.

The scaled model computes the same function as merged/ (AWQ folds s and 1/s), so the
reference for quality stays model-f16.gguf made from merged/. The scaled folder is what both
back-ends take: the GGUF writer (here) and the ONNX export (its `hf_dir`).

Mixed precision within a bits-per-weight budget (`plan_mixed_precision`) measures each
tensor's sensitivity as the output error its 4-bit grid causes on calibration inputs,
weighted by its size, and promotes the most sensitive tensors to Q8_0 until the budget is
spent; llama-quantize takes the plan as --tensor-type overrides.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from . import atomic
from .awq import AWQOptions, AWQResult, run_awq

GGUF_NAMES = {  # HF linear -> GGUF tensor name inside blk.N (llama.cpp's names)
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


@dataclass
class AWQStageResult:
    target: str
    scaled_dir: Path
    summary: dict
    alphas: dict


def scale_model(merged_dir: Path, out_dir: Path, calib_text: str, opts: AWQOptions, progress_factory=None) -> AWQStageResult:
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


def tensor_sensitivity(merged_dir: Path, calib_text: str, target: str, opts: AWQOptions | None = None) -> dict[str, dict]:
    """GGUF tensor name -> {"n": elements, "err": output MSE under the target grid x n}."""
    import torch
    from transformers import AutoTokenizer

    from .awq import InputStats, decoder_layers, token_batches_from_text
    from .hf_loader import load_hf_model
    from .quant_grids import grid_for

    opts = opts or AWQOptions(target=target)
    model = load_hf_model(merged_dir, torch.float32)
    tok = AutoTokenizer.from_pretrained(merged_dir)
    gen = torch.Generator().manual_seed(opts.seed)
    stats: dict[str, InputStats] = {}
    hooks = []
    for i, layer in enumerate(decoder_layers(model)):
        for hf, gg in GGUF_NAMES.items():
            lin = layer.get_submodule(hf)
            key = f"blk.{i}.{gg}"
            stats[key] = InputStats(lin.in_features, opts.sample_tokens // 2, gen)
            hooks.append(lin.register_forward_hook(lambda m, a, o, k=key: stats[k].add(a[0])))
    with torch.no_grad():
        for ids in token_batches_from_text(tok, calib_text, opts)[:4]:
            model(input_ids=ids.reshape(1, -1))
    for h in hooks:
        h.remove()
    out = {}
    for i, layer in enumerate(decoder_layers(model)):
        for hf, gg in GGUF_NAMES.items():
            lin = layer.get_submodule(hf)
            key = f"blk.{i}.{gg}"
            x, w = stats[key].sample, lin.weight.detach().to(torch.float32)
            q = grid_for(target, lin.in_features)(w)
            err = float(((x @ q.T) - (x @ w.T)).pow(2).mean())
            out[key] = {"n": w.numel(), "err": err * w.numel()}
    return out


def plan_mixed_precision(sens: dict[str, dict], current_bits: dict[str, int], total_bits: int, n_params: int,
                         budget_bpw: float, high_bpw: float = 8.5) -> list[str]:
    """Greedy: promote tensors to Q8_0 by error removed per extra bit until the file would
    exceed `budget_bpw`. current_bits: GGUF tensor name -> bits it takes in the plain quant.
    Returns llama-quantize --tensor-type arguments (regexes anchored on the full name)."""
    spare = budget_bpw * n_params - total_bits
    chosen = []
    for name, s in sorted(sens.items(), key=lambda kv: kv[1]["err"] / kv[1]["n"], reverse=True):
        cur = current_bits.get(f"{name}.weight")
        if cur is None:
            continue
        cost = high_bpw * s["n"] - cur
        if 0 < cost <= spare:
            spare -= cost
            chosen.append(f"^{name.replace('.', '[.]')}[.]weight$=q8_0")
    return chosen
