"""Activation-aware weight quantization (AWQ) for the formats the phone runs.

Stages, each with a checkable output:
1. `calibrate`: run the fp16/fp32 merged model over calibration text; per linear layer,
   keep mean |x| per input channel over every token (running sums) and a seeded sample
   of input rows for the search, so memory is bounded by `sample_tokens`.
2. `search_scales`: per group of linears that share an input, s = mean|x|^alpha,
   grid-searched over alpha in [0, 1] to minimise || X W^T - (X/s) Q(W*s)^T ||^2 with Q the
   grid of the target format (quant_grids.grid_for: Q4_0, Q4_K with its Q5_0 fallback,
   MatMulNBits int4).
3. `apply_scales`: fold s into the weights and 1/s into the preceding RMSNorm or linear,
   so the float model computes the same function (checked by tests).
4. optional `search_clip`: per output row and block, the clip ratio minimising the same
   error; applied by clamping the float weights (llama-quantize then sees the clipped range).

Groups follow AutoAWQ's recipe for Llama-family decoders: q/k/v after input_layernorm,
gate/up after post_attention_layernorm, o after v (only when n_kv_heads == n_heads, as the
fold through grouped-query attention is not exact), down after up.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .quant_grids import grid_for


@dataclass
class AWQOptions:
    target: str = "q4_0"          # grid to optimise for: q4_0, q4_k_m, int4
    grid: int = 10                # alpha candidates: 0, 1/grid, ..., 1
    seq_len: int = 512
    max_seqs: int = 8
    sample_tokens: int = 256      # input rows kept per linear for the search
    clip: bool = False
    clip_grid: int = 10           # clip ratios 1.0 down to 1 - 0.5*(clip_grid-1)/clip_grid
    seed: int = 0


@dataclass
class ScaleGroup:
    name: str                      # e.g. "layers.3.attn_in"
    prev: nn.Module                # RMSNorm (weight) or Linear (rows) receiving 1/s
    linears: list[nn.Linear]
    linear_names: list[str]
    input_key: str                 # whose recorded inputs drive the search


@dataclass
class AWQResult:
    alphas: dict[str, float] = field(default_factory=dict)
    loss_before: dict[str, float] = field(default_factory=dict)   # alpha = 0 (plain quantization)
    loss_after: dict[str, float] = field(default_factory=dict)
    clip_ratios: dict[str, float] = field(default_factory=dict)
    calib_tokens: int = 0
    calib_seconds: float = 0.0
    search_seconds: float = 0.0

    def summary(self) -> dict:
        gains = [self.loss_after[k] / self.loss_before[k] for k in self.loss_before if self.loss_before[k] > 0]
        return {
            "groups": len(self.alphas),
            "mean_alpha": sum(self.alphas.values()) / max(1, len(self.alphas)),
            "mean_loss_ratio_vs_plain": sum(gains) / max(1, len(gains)),
            "calib_tokens": self.calib_tokens,
            "calib_seconds": round(self.calib_seconds, 2),
            "search_seconds": round(self.search_seconds, 2),
        }


class InputStats:
    """Mean |x| per input channel (running) and a bounded seeded sample of input rows."""

    def __init__(self, dim: int, keep: int, gen: torch.Generator):
        self.abs_sum = torch.zeros(dim, dtype=torch.float64)
        self.count = 0
        self.keep = keep
        self.gen = gen
        self.sample: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float32)
        self.abs_sum += x.abs().sum(0, dtype=torch.float64)
        self.count += x.shape[0]
        pool = x if self.sample is None else torch.cat([self.sample, x])
        if pool.shape[0] > self.keep:
            idx = torch.randperm(pool.shape[0], generator=self.gen)[: self.keep]
            pool = pool[idx.sort().values]
        self.sample = pool.clone()

    @property
    def mean_abs(self) -> torch.Tensor:
        return (self.abs_sum / max(1, self.count)).to(torch.float32)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError("AWQ expects a Llama-family decoder (model.model.layers)")
    return list(layers)


def scale_groups(model: nn.Module) -> list[ScaleGroup]:
    cfg = model.config
    n_heads = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    groups = []
    for i, layer in enumerate(decoder_layers(model)):
        at, mlp = layer.self_attn, layer.mlp
        p = f"layers.{i}"
        groups.append(ScaleGroup(f"{p}.attn_in", layer.input_layernorm, [at.q_proj, at.k_proj, at.v_proj],
                                 [f"{p}.self_attn.q_proj", f"{p}.self_attn.k_proj", f"{p}.self_attn.v_proj"],
                                     f"{p}.self_attn.q_proj"))
        if n_kv == n_heads and at.v_proj.weight.shape[0] == at.o_proj.weight.shape[1]:
            groups.append(ScaleGroup(f"{p}.attn_out", at.v_proj, [at.o_proj], [f"{p}.self_attn.o_proj"],
                                     f"{p}.self_attn.o_proj"))
        groups.append(ScaleGroup(f"{p}.mlp_in", layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj],
                                 [f"{p}.mlp.gate_proj", f"{p}.mlp.up_proj"], f"{p}.mlp.gate_proj"))
        groups.append(ScaleGroup(f"{p}.mlp_out", mlp.up_proj, [mlp.down_proj], [f"{p}.mlp.down_proj"],
                                 f"{p}.mlp.down_proj"))
    return groups


@torch.no_grad()
def calibrate(model: nn.Module, token_batches: list[torch.Tensor], opts: AWQOptions,
              progress=None) -> tuple[dict[str, InputStats], int]:
    """Forward the model over calibration sequences and record linear-layer inputs."""
    gen = torch.Generator().manual_seed(opts.seed)
    stats: dict[str, InputStats] = {}
    hooks = []
    for g in scale_groups(model):
        lin = g.linears[0]
        stats[g.input_key] = InputStats(lin.in_features, opts.sample_tokens, gen)
        hooks.append(lin.register_forward_hook(lambda m, inp, out, key=g.input_key: stats[key].add(inp[0])))
    n_tok = 0
    try:
        model.eval()
        for ids in token_batches:
            model(input_ids=ids.reshape(1, -1))
            n_tok += ids.numel()
            if progress:
                progress(ids.numel())
    finally:
        for h in hooks:
            h.remove()
    return stats, n_tok


def _group_loss(x: torch.Tensor, weights: list[torch.Tensor], s: torch.Tensor | None, quant) -> float:
    total = 0.0
    for w in weights:
        w = w.to(torch.float32)
        ref = x @ w.T
        if s is None:
            wq = quant(w)
        else:
            wq = quant(w * s) / s
        total += float(((x @ wq.T) - ref).pow(2).mean())
    return total


@torch.no_grad()
def best_scale(x: torch.Tensor, x_mean: torch.Tensor, weights: list[torch.Tensor], quant,
               grid: int) -> tuple[torch.Tensor, float, float, float]:
    """Grid-search alpha; returns (s, alpha, loss at alpha=0 i.e. plain, best loss)."""
    plain = _group_loss(x, weights, None, quant)
    best = (torch.ones_like(x_mean), 0.0, plain)
    for k in range(1, grid + 1):
        alpha = k / grid
        s = x_mean.clamp_min(1e-4).pow(alpha)
        s = s / math.sqrt(float(s.max() * s.min()))
        loss = _group_loss(x, weights, s, quant)
        if loss < best[2]:
            best = (s, alpha, loss)
    return best[0], best[1], plain, best[2]


@torch.no_grad()
def fold_scale(group: ScaleGroup, s: torch.Tensor) -> None:
    """W <- W * s (input columns) for the group's linears; prev <- prev / s, exactly."""
    prev = group.prev
    dt = prev.weight.dtype
    if isinstance(prev, nn.Linear):
        prev.weight.copy_((prev.weight.to(torch.float32) / s[:, None]).to(dt))
        if prev.bias is not None:
            prev.bias.copy_((prev.bias.to(torch.float32) / s).to(dt))
    else:  # RMSNorm-style: y = weight * normalize(x)
        prev.weight.copy_((prev.weight.to(torch.float32) / s).to(dt))
    for lin in group.linears:
        lin.weight.copy_((lin.weight.to(torch.float32) * s[None, :]).to(lin.weight.dtype))


@torch.no_grad()
def search_clip(x: torch.Tensor, w: torch.Tensor, quant, n_grid: int, block: int = 32) -> tuple[torch.Tensor, float]:
    """Per (row, block) clip ratio minimising the block-wise output error; returns clipped W."""
    w = w.to(torch.float32)
    out, inp = w.shape
    xb = x.reshape(x.shape[0], inp // block, block)             # [n, nb, block]
    wb = w.reshape(out, inp // block, block)                     # [out, nb, block]
    ref = torch.einsum("nbk,obk->nob", xb, wb)
    amax = wb.abs().amax(-1, keepdim=True)
    best_err = torch.full((out, inp // block), float("inf"))
    best_w = wb.clone()
    ratios = []
    for i in range(n_grid):
        r = 1.0 - 0.5 * i / n_grid
        cw = torch.clamp(wb, -amax * r, amax * r)
        q = quant(cw.reshape(out, inp)).reshape(out, inp // block, block)
        err = (torch.einsum("nbk,obk->nob", xb, q) - ref).pow(2).mean(0)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_w = torch.where(better[..., None], cw, best_w)
        ratios.append(r)
    return best_w.reshape(out, inp), float((best_w.abs().amax(-1) / amax.squeeze(-1).clamp_min(1e-12)).mean())


@torch.no_grad()
def search_and_apply(model: nn.Module, stats: dict[str, InputStats], opts: AWQOptions, progress=None) -> AWQResult:
    """Scale search + fold for every group (then clipping when asked). Deterministic."""
    res = AWQResult()
    t0 = time.perf_counter()
    for g in scale_groups(model):
        st = stats[g.input_key]
        x = st.sample
        quant = grid_for(opts.target, g.linears[0].in_features, search=True)
        s, alpha, plain, best = best_scale(x, st.mean_abs, [lin.weight for lin in g.linears], quant, opts.grid)
        if alpha > 0:
            fold_scale(g, s)
        res.alphas[g.name] = alpha
        res.loss_before[g.name] = plain
        res.loss_after[g.name] = best
        if opts.clip:
            xs = x / s if alpha > 0 else x
            for lin, lname in zip(g.linears, g.linear_names):
                clipped, mean_ratio = search_clip(xs, lin.weight, quant, opts.clip_grid)
                lin.weight.copy_(clipped.to(lin.weight.dtype))
                res.clip_ratios[lname] = mean_ratio
        if progress:
            progress(1)
    res.search_seconds = time.perf_counter() - t0
    return res


def token_batches_from_text(tokenizer, text: str, opts: AWQOptions) -> list[torch.Tensor]:
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    if ids.numel() < 16:
        raise ValueError("calibration text is too short: give at least a few paragraphs of domain text")
    chunks = [ids[i: i + opts.seq_len] for i in range(0, ids.numel(), opts.seq_len)]
    chunks = [c for c in chunks if c.numel() >= 16]
    return chunks[: opts.max_seqs]


def run_awq(model: nn.Module, tokenizer, calib_text: str, opts: AWQOptions | None = None,
            progress_factory=None) -> AWQResult:
    """Calibrate on `calib_text`, search and fold scales in place; returns the search record."""
    opts = opts or AWQOptions()
    torch.manual_seed(opts.seed)
    batches = token_batches_from_text(tokenizer, calib_text, opts)
    t0 = time.perf_counter()
    bar = (progress_factory(total=sum(b.numel() for b in batches), desc="AWQ calibration", unit="tok")
           if progress_factory else None)
    model_dtype = next(model.parameters()).dtype
    model.to(torch.float32)
    try:
        stats, n_tok = calibrate(model, batches, opts, bar.update if bar else None)
        if bar:
            bar.close()
        calib_s = time.perf_counter() - t0
        groups = len(scale_groups(model))
        bar = (progress_factory(total=groups, desc=f"AWQ search ({opts.target})", unit="group")
               if progress_factory else None)
        res = search_and_apply(model, stats, opts, bar.update if bar else None)
        if bar:
            bar.close()
    finally:
        model.to(model_dtype)
    res.calib_tokens = n_tok
    res.calib_seconds = calib_s
    return res
