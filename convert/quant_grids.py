"""Fake quantizers (quantize, then dequantize) on the grids of the formats the phone runs.

They mirror llama.cpp's reference quantizers (ggml-quants.c, without an importance matrix)
closely enough to rank AWQ scale candidates: the same block sizes, scale formats and
rounding rules. Weights are [out_features, in_features]; blocks run along in_features,
as ggml rows do. Everything is vectorised torch on float32.
"""

from __future__ import annotations

from typing import Callable

import torch

QuantFn = Callable[[torch.Tensor], torch.Tensor]


def _fp16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(torch.float32)


def _blocks(w: torch.Tensor, size: int) -> torch.Tensor:
    out, inp = w.shape
    if inp % size:
        raise ValueError(f"row length {inp} is not a multiple of the block size {size}")
    return w.reshape(out, inp // size, size).to(torch.float32)


def _signed_absmax(b: torch.Tensor) -> torch.Tensor:
    """The value of largest magnitude per block, sign kept (the first one on ties, as ggml)."""
    hi = b.amax(dim=-1, keepdim=True)
    lo = b.amin(dim=-1, keepdim=True)
    return torch.where(hi >= -lo, hi, lo)


def _signed_absmax_blocks(w: torch.Tensor, qk: int, half: int, top: int) -> torch.Tensor:
    """Q4_0 / Q5_0: d = (value of max |x|) / -half, q = min(top, trunc(x/d + half + .5))."""
    b = _blocks(w, qk)
    mx = _signed_absmax(b)
    d = mx / -half
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))  # from the fp32 d, as ggml does
    q = torch.clamp(torch.trunc(b * inv + (half + 0.5)), 0, top)
    return ((q - half) * _fp16(d)).reshape(w.shape)


def q4_0(w: torch.Tensor) -> torch.Tensor:
    """GGML Q4_0: blocks of 32, symmetric, one fp16 scale."""
    return _signed_absmax_blocks(w, 32, 8, 15)


def q5_0(w: torch.Tensor) -> torch.Tensor:
    """GGML Q5_0 (what Q4_K falls back to on rows not divisible by 256)."""
    return _signed_absmax_blocks(w, 32, 16, 31)


def q8_0(w: torch.Tensor) -> torch.Tensor:
    b = _blocks(w, 32)
    amax = b.abs().amax(dim=-1, keepdim=True)
    d = amax / 127
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    return (torch.round(b * inv) * _fp16(d)).reshape(w.shape)


def _qkx2(x: torch.Tensor, nmax: int = 15, rmin: float = -1.0, rdelta: float = 0.1, nstep: int = 20):
    """Batched make_qkx2_quants over the last dim: returns (scale, min) per row, x ~ scale*L - min."""
    sum_x2 = (x * x).mean(dim=-1, keepdim=True)
    wts = sum_x2.sqrt() + x.abs()
    mn = torch.clamp(x.amin(dim=-1, keepdim=True), max=0.0)
    mx = x.amax(dim=-1, keepdim=True)
    rng = (mx - mn).clamp_min(1e-30)
    sw = wts.sum(-1, keepdim=True)
    sx = (wts * x).sum(-1, keepdim=True)

    def err(scale, minv, L):
        return (wts * (scale * L + minv - x) ** 2).sum(-1, keepdim=True)

    iscale = nmax / rng
    L = torch.clamp(torch.round(iscale * (x - mn)), 0, nmax)
    best_scale, best_min = 1.0 / iscale, mn
    best_err = err(best_scale, best_min, L)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * step + nmax) / rng
        L = torch.clamp(torch.round(iscale * (x - mn)), 0, nmax)
        sl = (wts * L).sum(-1, keepdim=True)
        sl2 = (wts * L * L).sum(-1, keepdim=True)
        sxl = (wts * L * x).sum(-1, keepdim=True)
        D = sw * sl2 - sl * sl
        ok = D > 0
        Dsafe = torch.where(ok, D, torch.ones_like(D))
        scale = (sw * sxl - sx * sl) / Dsafe
        minv = (sl2 * sx - sl * sxl) / Dsafe
        pos = minv > 0
        scale = torch.where(pos, sxl / sl2.clamp_min(1e-30), scale)
        minv = torch.where(pos, torch.zeros_like(minv), minv)
        e = err(scale, minv, L)
        better = ok & (e < best_err)
        best_scale = torch.where(better, scale, best_scale)
        best_min = torch.where(better, minv, best_min)
        best_err = torch.where(better, e, best_err)
    return best_scale, -best_min


def q4_k(w: torch.Tensor, nstep: int = 20) -> torch.Tensor:
    """GGML Q4_K: super-blocks of 256 = 8 sub-blocks of 32, asymmetric, 6-bit sub-block
    scales and mins under fp16 super-block d and dmin. nstep is make_qkx2_quants' scale
    search (20 in ggml); the AWQ search ranks candidates with a shorter one (SEARCH_NSTEP)."""
    sb = _blocks(w, 256)
    out, nsb, _ = sb.shape
    sub = sb.reshape(out, nsb, 8, 32)
    scales, mins = _qkx2(sub, nstep=nstep)  # [out, nsb, 8, 1]
    max_scale = scales.amax(dim=2, keepdim=True)
    max_min = mins.amax(dim=2, keepdim=True)
    inv_s = torch.where(max_scale > 0, 63.0 / max_scale, torch.zeros_like(max_scale))
    inv_m = torch.where(max_min > 0, 63.0 / max_min, torch.zeros_like(max_min))
    ls = torch.clamp(torch.round(inv_s * scales), max=63)
    lm = torch.clamp(torch.round(inv_m * mins), max=63)
    d = _fp16(max_scale / 63.0) * ls
    dm = _fp16(max_min / 63.0) * lm
    dsafe = torch.where(d != 0, d, torch.ones_like(d))
    L = torch.clamp(torch.round((sub + dm) / dsafe), 0, 15)
    deq = torch.where(d != 0, d * L - dm, torch.zeros_like(sub))
    return deq.reshape(w.shape)


def matmul_nbits_int4(w: torch.Tensor, block_size: int = 32) -> torch.Tensor:
    """ONNX Runtime MatMulNBits, 4 bits, symmetric: scale = absmax/8 per block, zero point 8
    (the default of onnxruntime's int4 weight quantizer)."""
    b = _blocks(w, block_size)
    scale = _signed_absmax(b) / -8.0
    inv = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
    q = torch.clamp(torch.round(b * inv) + 8, 0, 15)
    return ((q - 8) * scale).reshape(w.shape)


GRIDS: dict[str, QuantFn] = {
    "q4_0": q4_0,
    "q5_0": q5_0,
    "q8_0": q8_0,
    "q4_k": q4_k,
    "int4": matmul_nbits_int4,
}


SEARCH_NSTEP = 3  # Q4_K scale-search steps while ranking AWQ candidates (x7 faster than 20)


def _q4_k_search(w: torch.Tensor) -> torch.Tensor:
    return q4_k(w, nstep=SEARCH_NSTEP)


def grid_for(target: str, in_features: int, search: bool = False) -> QuantFn:
    """The grid llama-quantize will really use for a tensor with rows of in_features:
    Q4_K needs rows divisible by 256 and falls back to Q5_0 otherwise (llama-quant.cpp).
    search=True returns a cheaper stand-in of the same grid where one exists (Q4_K)."""
    key = target.lower()
    if key in ("q4_k", "q4_k_m", "q4_k_s"):
        if in_features % 256:
            return q5_0
        return _q4_k_search if search else q4_k
    if key not in GRIDS:
        raise ValueError(f"no quantization grid for {target!r}; choose one of {sorted(GRIDS)} or q4_k_m")
    return GRIDS[key]
