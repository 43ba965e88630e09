"""Architecture registry: what the merge and the GGUF writer need to know per HF `model_type`.

Add an architecture by registering an `ArchSpec` with `@register`; nothing else branches on
the architecture name. Facts (tensor names, RoPE layout) follow llama.cpp's gguf-py tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import UnsupportedArchitectureError

# HF linear layers a LoRA adapter may target, per block.
LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _rope_params(config) -> dict:
    params = getattr(config, "rope_parameters", None) or {}
    if not params:
        params = dict(getattr(config, "rope_scaling", None) or {})
        if getattr(config, "rope_theta", None) is not None:
            params.setdefault("rope_theta", config.rope_theta)
    return dict(params)


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def permute_for_rope_interleaved(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF stores q/k rows for rotate-half RoPE; llama.cpp's LLAMA arch uses pairwise RoPE.

    Regroup each head's rows from [half0, half1] to interleaved pairs (as convert_hf_to_gguf does).
    Works for weights (rows x cols) and biases (rows,).
    """
    shape = w.shape
    return w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


@dataclass(frozen=True)
class ArchSpec:
    name: str                      # registry key and HF model_type
    gguf_arch: str                 # general.architecture in the GGUF
    hf_classes: tuple[str, ...]    # config.architectures values accepted
    permute_qk: bool               # llama.cpp RoPE layout needs the q/k row permutation
    lora_targets: tuple[str, ...] = LLAMA_LINEARS
    # rope_type values from the HF config this architecture's writer understands
    rope_types: tuple[str, ...] = ("default", "linear", "llama3")
    extra_hparams: Callable[[object, object], None] | None = field(default=None, compare=False)

    def gguf_tensor_name(self, hf_name: str, n_blocks: int) -> str | None:
        import gguf

        arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == self.gguf_arch)
        tmap = _tensor_map(arch_enum, n_blocks)
        return tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))

    def transform(self, hf_name: str, arr: np.ndarray, config) -> np.ndarray:
        """Layout changes between the HF tensor and the GGUF tensor (q/k RoPE permutation)."""
        if not self.permute_qk:
            return arr
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return permute_for_rope_interleaved(arr, config.num_attention_heads)
        if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return permute_for_rope_interleaved(arr, config.num_key_value_heads)
        return arr

    def skip_tensor(self, hf_name: str, config) -> bool:
        """Tensors that are not written: the tied lm_head and rotary caches."""
        if hf_name == "lm_head.weight" and getattr(config, "tie_word_embeddings", False):
            return True
        return hf_name.endswith("rotary_emb.inv_freq")

    def check_config(self, config) -> None:
        rope_type = _rope_params(config).get("rope_type", "default")
        if rope_type not in self.rope_types:
            raise UnsupportedArchitectureError(
                f"{self.name}: RoPE type {rope_type!r} is not supported by this converter "
                f"(supported: {', '.join(self.rope_types)}); convert with llama.cpp's convert_hf_to_gguf.py instead"
            )

    def write_hparams(self, writer, config) -> None:
        """Architecture hyper-parameters and RoPE settings."""
        import gguf

        writer.add_context_length(int(config.max_position_embeddings))
        writer.add_embedding_length(int(config.hidden_size))
        writer.add_block_count(int(config.num_hidden_layers))
        writer.add_feed_forward_length(int(config.intermediate_size))
        writer.add_head_count(int(config.num_attention_heads))
        writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads))
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_vocab_size(int(config.vocab_size))
        hd = head_dim(config)
        writer.add_rope_dimension_count(hd)
        if hd != config.hidden_size // config.num_attention_heads:
            writer.add_key_length(hd)
            writer.add_value_length(hd)
        rope = _rope_params(config)
        if rope.get("rope_theta") is not None:
            writer.add_rope_freq_base(float(rope["rope_theta"]))
        if rope.get("rope_type") == "linear" and rope.get("factor"):
            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(rope["factor"]))
        if self.extra_hparams is not None:
            self.extra_hparams(writer, config)

    def extra_tensors(self, config) -> list[tuple[str, np.ndarray]]:
        """Tensors llama.cpp needs that HF computes on the fly (llama3 RoPE frequency factors)."""
        rope = _rope_params(config)
        if rope.get("rope_type") != "llama3":
            return []
        return [("rope_freqs.weight", llama3_rope_factors(config, rope))]


def llama3_rope_factors(config, rope: dict) -> np.ndarray:
    dim = head_dim(config)
    base = float(rope.get("rope_theta", 10000.0))
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    factor = float(rope.get("factor", 8.0))
    lo, hi = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    lo_wl, hi_wl = old_ctx / lo, old_ctx / hi
    out = []
    for f in freqs:
        wl = 2 * np.pi / f
        if wl < hi_wl:
            out.append(1.0)
        elif wl > lo_wl:
            out.append(factor)
        else:
            smooth = (old_ctx / wl - lo) / (hi - lo)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


_TMAPS: dict = {}


def _tensor_map(arch_enum, n_blocks):
    import gguf

    key = (arch_enum, n_blocks)
    if key not in _TMAPS:
        _TMAPS[key] = gguf.get_tensor_name_map(arch_enum, n_blocks)
    return _TMAPS[key]


REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    REGISTRY[spec.name] = spec
    return spec


register(ArchSpec(
    name="llama", gguf_arch="llama", hf_classes=("LlamaForCausalLM",), permute_qk=True,
))
# Qwen2: same block layout plus q/k/v biases; llama.cpp applies NEOX RoPE, so no permutation.
register(ArchSpec(
    name="qwen2", gguf_arch="qwen2", hf_classes=("Qwen2ForCausalLM",), permute_qk=False,
    rope_types=("default", "linear"),
))


def get_arch(config) -> ArchSpec:
    """The ArchSpec for a transformers config, or UnsupportedArchitectureError naming what is supported."""
    model_type = getattr(config, "model_type", None)
    spec = REGISTRY.get(model_type)
    if spec is None:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported; supported: {', '.join(sorted(REGISTRY))}. "
            "Use a base model of a supported architecture, or add an ArchSpec to "
            "finllm_edge_convert/architectures.py"
        )
    spec.check_config(config)
    return spec
