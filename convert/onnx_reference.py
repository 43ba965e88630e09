"""Reference Hugging Face models for the ONNX checks, tests and benchmark.

- `hf_dir_from_gguf`: turn a float-loadable GGUF base (e.g. the embedded SmolLM2 Q4_1) into a plain
  HF folder (config.json + model.safetensors + tokenizer files) that onnxruntime-genai's model builder
  reads. transformers dequantizes the GGUF; we rebuild a fresh model from the config so the saved
  folder carries no `quantization_config` and names its architecture.
- `tiny_random_hf_dir`: a seeded, tiny random Llama or Qwen2 folder for fast tests.

Everything is written to a temporary folder and renamed into place, so a cache entry is complete or absent.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from finllm_edge.errors import ConversionError, ModelNotFoundError

# HF model_type -> architecture class name the model builder dispatches on.
ARCHITECTURE_BY_MODEL_TYPE = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}


def _atomic_dir(out_dir: Path):
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))


def _publish(tmp: Path, out_dir: Path) -> Path:
    if out_dir.exists():  # another process won the race: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return out_dir
    os.rename(tmp, out_dir)
    return out_dir


def hf_dir_from_gguf(gguf_path, out_dir) -> Path:
    """Write an HF folder for `gguf_path` into `out_dir` (reused if it already holds a model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if (out_dir / "config.json").is_file() and (out_dir / "model.safetensors").is_file():
        return out_dir
    if not gguf_path.is_file():
        raise ModelNotFoundError(f"GGUF base not found: {gguf_path}")
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = loaded.config
    arch = ARCHITECTURE_BY_MODEL_TYPE.get(config.model_type)
    if arch is None:
        raise ConversionError(
            f"{gguf_path.name}: model_type {config.model_type!r} is not supported for ONNX export "
            f"(supported: {sorted(ARCHITECTURE_BY_MODEL_TYPE)})"
        )
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [arch]
    config.dtype = "float32"
    fresh = type(loaded)(config)
    fresh.load_state_dict(loaded.state_dict())
    fresh.eval()
    tmp = _atomic_dir(out_dir)
    try:
        fresh.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        return _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def tiny_random_hf_dir(out_dir, arch: str = "llama", tokenizer_dir=None, seed: int = 0,
                       hidden_size: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                       intermediate_size: int = 128) -> Path:
    """A tiny random Llama/Qwen2 with `tokenizer_dir`'s tokenizer (vocab size taken from it)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    if tokenizer_dir is None:
        raise ModelNotFoundError("tiny_random_hf_dir needs tokenizer_dir (an HF folder with tokenizer files)")
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    common = dict(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=2048, rms_norm_eps=1e-5, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )
    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    if arch not in classes:
        raise ConversionError(f"tiny_random_hf_dir: arch {arch!r} not in {sorted(classes)}")
    cfg_cls, model_cls = classes[arch]
    config = cfg_cls(**common)
    config.architectures = [ARCHITECTURE_BY_MODEL_TYPE[arch]]
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():  # larger-than-default weights so the logits are not all near-uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    tmp = _atomic_dir(out_dir)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        return _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
