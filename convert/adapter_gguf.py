"""Stage `adapter` (`--adapter-gguf`): the PEFT adapter as a GGUF LoRA for runtime use, next to
the unmerged base it applies to (base-f16.gguf and base-<quant>.gguf).

The adapter is the one `check` resolved against the base with PEFT itself (adapter.py), so it has
passed the same checks as the merge: target resolution, rank/alpha patterns, rsLoRA, fan_in_fan_out
(ignored for nn.Linear, as PEFT and the merge ignore it). Per adapted base weight W (out, in):

    <gguf name of W>.lora_a = A            (rank, in)   -> GGUF ne [in, rank]
    <gguf name of W>.lora_b = scaling * B  (out, rank)  -> GGUF ne [rank, out]

with `scaling` PEFT's own for that module (alpha/r, alpha/sqrt(r) under rsLoRA, rank_pattern and
alpha_pattern applied) folded into lora_b, and adapter.lora.alpha = 0 so that llama.cpp (and the
core) apply exactly W x + B (A x). lora_b rows of q/k projections get the same RoPE row permutation
as the base weights (ArchSpec.transform), so the delta lands on the rows it was trained for.
Tensor type F16, as the merged reference.

Combinations a runtime LoRA cannot express are refused before anything is written:
- modules_to_save (a whole trained copy of a weight replaces the base one),
- AWQ-scaled bases (--awq): their input channels are rescaled per artifact and their norms absorb
  the inverse scales, so an adapter for the plain base would apply to the wrong activations. The
  runtime-adapter bases are always the plain (unscaled) base.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .errors import ConversionError, UnsupportedAdapterError

ADAPTER_FILE = "adapter-f16.gguf"
BASE_DIR = "base"


def base_artifact_names(quants: list[str]) -> list[str]:
    """Files --adapter-gguf adds to --out: the adapter and the unmerged base (f16 + one per quant)."""
    return [ADAPTER_FILE, "base-f16.gguf"] + [f"base-{q}.gguf" for q in quants]


def check_combination(opts, adapter) -> None:
    """Refuse --adapter-gguf combinations whose runtime result would differ from the merged model."""
    if not opts.adapter_gguf:
        return
    if opts.awq:
        raise UnsupportedAdapterError(
            "--adapter-gguf with --awq: AWQ folds per-channel scales into the merged model's weights and norms, "
            "searched on the merged model's activations; a runtime adapter on an AWQ-scaled base would meet "
            "rescaled inputs it was not trained for (and the scales would differ without the adapter). Run "
            "--adapter-gguf without --awq: its bases are the plain base quantized by llama-quantize")
    if getattr(adapter, "saved", None):
        names = ", ".join(sorted(adapter.saved)[:3])
        raise UnsupportedAdapterError(
            f"--adapter-gguf: the adapter has modules_to_save ({names}): trained copies that replace whole base "
            "weights, which a GGUF LoRA (low-rank deltas) cannot carry. Use the merged artifacts instead")


@dataclass
class _NoAdapter:
    """Stands in for the adapter when the base itself is written (merge.write_merged with no LoRA)."""

    modules: dict
    saved: dict
    resolved: bool = True


def write_base_folder(base, out_dir: Path, dtype: str, progress=None) -> Path:
    """The unmerged base as a HF folder (the GGUF writer reads safetensors): the same tensors the merge
    starts from, so base + runtime adapter and the merged model differ only by where the delta is added."""
    from .merge import write_merged

    return write_merged(base, _NoAdapter({}, {}), out_dir, dtype, progress)


def adapter_tensors(adapter, arch, config):
    """[(gguf name, float16 array)] in a stable order: lora_a and lora_b of every adapted weight."""
    import torch

    n_blocks = int(config.num_hidden_layers)
    out = []
    for name in sorted(adapter.modules):
        mod = adapter.modules[name]
        gname = arch.gguf_tensor_name(name, n_blocks)
        if gname is None:
            raise ConversionError(f"adapter module {name} has no GGUF tensor name for {arch.name}")
        a, b = adapter.factors(name)
        a = a.to(torch.float32).numpy()
        b = (b.to(torch.float32) * float(mod.scale)).numpy()
        b = arch.transform(name, b, config)        # q/k: the base rows' RoPE permutation
        for suffix, arr in ((".lora_a", a), (".lora_b", b)):
            half = np.ascontiguousarray(arr.astype(np.float16))
            if not np.isfinite(half).all():
                raise ConversionError(
                    f"adapter tensor {gname}{suffix} has values outside float16 (LoRA scaling {mod.scale:g} folded "
                    "in); check lora_alpha / alpha_pattern")
            out.append((gname + suffix, half))
    return out


def write_adapter_gguf(adapter, arch, config, out_path: Path, provenance) -> dict:
    """Write the GGUF LoRA; returns {"path", "n_tensors", "rank_max", "file_bytes"}."""
    import gguf

    tensors = adapter_tensors(adapter, arch, config)
    if not tensors:
        raise ConversionError("--adapter-gguf: the adapter adapts no base weight (nothing to write)")
    with atomic_path(Path(out_path)) as tmp:
        w = gguf.GGUFWriter(tmp, arch.gguf_arch)
        try:
            w.add_type(gguf.GGUFType.ADAPTER)
            w.add_string("adapter.type", "lora")
            w.add_float32("adapter.lora.alpha", 0.0)   # PEFT's scaling is folded into lora_b
            w.add_name(provenance.adapter_name)
            w.add_description("LoRA adapter for runtime use, written by finllm-edge convert --adapter-gguf "
                              "(scaling folded into lora_b)")
            w.add_base_model_count(1)
            w.add_base_model_name(0, provenance.base_name)
            w.add_string("general.base_model.0.sha256", provenance.base_sha256)
            w.add_string("general.adapter.sha256", provenance.adapter_sha256)
            w.add_string("general.finllm_edge.version", provenance.finllm_edge_version)
            for name, arr in tensors:
                w.add_tensor(name, arr)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
        finally:
            w.close()
    ranks = [arr.shape[0] for name, arr in tensors if name.endswith(".lora_a")]
    return {"path": str(out_path), "n_tensors": len(ranks), "rank_max": int(max(ranks)),
            "file_bytes": Path(out_path).stat().st_size}


def base_provenance(prov):
    """The provenance of the unmerged base GGUFs (no adapter merged in)."""
    return replace(prov, merged=False)
