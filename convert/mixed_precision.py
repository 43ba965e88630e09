"""Mixed precision within a bits-per-weight budget: measured, not guessed.

1. Probe: llama-quantize the source once with the recipe's own settings, to learn every
   tensor's type and size (k-quant fallbacks included).
2. Sensitivity: for every linear of every block, the output error on calibration inputs under
   each grid it could take (Q4_0, Q5_0, Q8_0; Q4_K where rows allow), times its size.
3. Plan: greedily buy the upgrade (any tensor, any higher type) that removes the most error per
   extra bit, until the budget is spent.
4. The token embedding (the output head too when tied) is the largest single tensor and
   llama-quantize keeps it at Q8_0 on models like SmolLM2. Its error is in other units than the
   linears', so it is decided end to end: the budget is planned twice, with the embedding as
   probed and with it at Q5_0 (its bits then buy linear upgrades), both candidates are
   quantized, and the one with the lower KLD against the F16 reference on calibration text wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

LADDER = {"q4_0": 4.5, "q5_0": 5.5, "q8_0": 8.5}  # block-32 types: bits per weight incl. scales
EMBEDDING = "token_embd.weight"
EMBEDDING_DEMOTED = "q5_0"

GGUF_NAMES = {  # HF linear -> GGUF tensor name inside blk.N (llama.cpp's names)
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def tensor_sensitivity(model_dir: Path, calib_text: str, seed: int = 0, sample_tokens: int = 512) -> dict[str, dict]:
    """GGUF tensor name -> {"n": elements, "err": {grid: output MSE under that grid x n}}."""
    import torch
    from transformers import AutoTokenizer

    from .awq import AWQOptions, InputStats, decoder_layers, token_batches_from_text
    from .hf_loader import load_hf_model
    from .quant_grids import GRIDS, q4_k

    opts = AWQOptions(target="q4_0", seed=seed)
    model = load_hf_model(model_dir, torch.float32)
    tok = AutoTokenizer.from_pretrained(model_dir)
    gen = torch.Generator().manual_seed(seed)
    stats: dict[str, InputStats] = {}
    hooks = []
    for i, layer in enumerate(decoder_layers(model)):
        for hf, gg in GGUF_NAMES.items():
            lin = layer.get_submodule(hf)
            key = f"blk.{i}.{gg}.weight"
            stats[key] = InputStats(lin.in_features, sample_tokens, gen)
            hooks.append(lin.register_forward_hook(lambda m, a, o, k=key: stats[k].add(a[0])))
    with torch.no_grad():
        for ids in token_batches_from_text(tok, calib_text, opts)[:4]:
            model(input_ids=ids.reshape(1, -1))
    for h in hooks:
        h.remove()
    out = {}
    with torch.no_grad():
        for i, layer in enumerate(decoder_layers(model)):
            for hf, gg in GGUF_NAMES.items():
                lin = layer.get_submodule(hf)
                key = f"blk.{i}.{gg}.weight"
                x, w = stats[key].sample, lin.weight.detach().to(torch.float32)
                ref = x @ w.T
                grids = {t: GRIDS[t] for t in LADDER}
                if lin.in_features % 256 == 0:
                    grids["q4_k"] = q4_k
                err = {t: float(((x @ g(w).T) - ref).pow(2).mean()) * w.numel() for t, g in grids.items()}
                out[key] = {"n": w.numel(), "err": err}
    return out


@dataclass
class Plan:
    types: dict[str, str] = field(default_factory=dict)  # tensor -> new type (only the changed ones)
    bits: int = 0                                          # total tensor bits after the plan

    def args(self) -> list[str]:
        """llama-quantize arguments (anchored regexes; the embedding has its own flag)."""
        out = []
        for name, t in sorted(self.types.items()):
            if name == EMBEDDING:
                out += ["--token-embedding-type", t]
            else:
                out += ["--tensor-type", "^" + name.replace(".", "[.]") + "$=" + t]
        return out


def plan_upgrades(sens: dict[str, dict], probe: dict[str, tuple[str, int, int]], budget_bits: float,
                  fixed: dict[str, str] | None = None) -> Plan:
    """Greedy: repeatedly take the (tensor, higher type) with the most error removed per extra
    bit that still fits. probe: tensor -> (type as probed, bits, elements); `fixed` types are
    applied first. budget_bits covers the tensors in `probe`."""
    fixed = dict(fixed or {})
    bits = {name: b for name, (_, b, _) in probe.items()}
    level = {name: t.lower() for name, (t, _, _) in probe.items()}
    for name, t in fixed.items():
        bits[name] = int(LADDER[t] * probe[name][2])
        level[name] = t
    spare = budget_bits - sum(bits.values())
    chosen = dict(fixed)
    while True:
        best = None
        for name, s in sens.items():
            if name not in level or name in fixed:
                continue
            cur_err = s["err"].get(level[name])
            if cur_err is None:  # a type we have no grid for (Q6_K, Q4_1): leave it
                continue
            for t, bpw in LADDER.items():
                cost = bpw * s["n"] - bits[name]
                gain = cur_err - s["err"][t]
                if 0 < cost <= spare and gain > 0 and (best is None or gain / cost > best[0]):
                    best = (gain / cost, name, t, cost)
        if best is None:
            break
        _, name, t, cost = best
        spare -= cost
        bits[name] += int(cost)
        level[name] = t
        chosen[name] = t
    return Plan(chosen, sum(bits.values()))


def probe_types(path: Path) -> tuple[dict[str, tuple[str, int, int]], int, int]:
    """Quantized tensors of a GGUF: name -> (GGML type, bits, elements); and the bits and
    elements of all its tensors (float ones included, as bits per weight counts them)."""
    from gguf import GGUFReader

    probe, total_bits, n_params = {}, 0, 0
    for t in GGUFReader(path).tensors:
        n, b = int(t.n_elements), 8 * int(t.n_bytes)
        total_bits, n_params = total_bits + b, n_params + n
        if t.tensor_type.name not in ("F32", "F16", "BF16"):
            probe[t.name] = (t.tensor_type.name, b, n)
    return probe, total_bits, n_params


def candidates(sens: dict[str, dict], probe: dict[str, tuple[str, int, int]], total_bits: int, n_params: int,
               budget_bpw: float) -> list[tuple[str, Plan]]:
    """The plans to try: the embedding as probed, and demoted to Q5_0 when it is above that."""
    budget = budget_bpw * n_params - (total_bits - sum(b for _, b, _ in probe.values()))
    plans = [("embedding as probed", plan_upgrades(sens, probe, budget))]
    emb = probe.get(EMBEDDING)
    if emb and emb[1] > LADDER[EMBEDDING_DEMOTED] * emb[2]:
        plans.append((f"embedding at {EMBEDDING_DEMOTED.upper()}",
                      plan_upgrades(sens, probe, budget, fixed={EMBEDDING: EMBEDDING_DEMOTED})))
    return plans


def choose(plans: list[tuple[str, Plan]], score: Callable[[Plan], float]) -> tuple[str, Plan, dict[str, float]]:
    """The plan with the lowest score (calibration KLD), and every score for the record."""
    scores = {label: score(p) for label, p in plans}
    label = min(scores, key=scores.get)
    return label, dict(plans)[label], scores
