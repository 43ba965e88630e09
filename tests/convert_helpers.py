"""Tiny random models and adapters built in-process for the conversion tests."""

from __future__ import annotations

import json
from pathlib import Path

ARCH_CONFIGS = {
    "llama": dict(model_type="llama", tie_word_embeddings=True),
    "qwen2": dict(model_type="qwen2", tie_word_embeddings=False),
}


def tiny_config(arch: str, vocab_size: int, hidden: int = 64, layers: int = 2):
    from transformers import LlamaConfig, Qwen2Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    return cls(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
               tie_word_embeddings=ARCH_CONFIGS[arch]["tie_word_embeddings"], bos_token_id=1, eos_token_id=2,
               pad_token_id=2)


def make_tiny_base(folder: Path, arch: str, tokenizer_dir: Path, seed: int = 0, hidden: int = 64, layers: int = 2,
                   weight_std: float = 0.2):
    """A random tiny model saved as a HF folder (safetensors + the SmolLM2 tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = tiny_config(arch, len(tok), hidden, layers)
    cfg.initializer_range = weight_std
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif n.endswith("bias"):
                p.copy_(0.5 * torch.randn_like(p))
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return model


def make_adapter(model, folder: Path, seed: int = 1, targets=("q_proj", "k_proj", "v_proj", "o_proj"), r: int = 4,
                 alpha: int = 8, **extra):
    """A PEFT LoRA adapter on `model` with random (non-zero) A and B, saved to `folder`."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, **extra)
    peft_model = get_peft_model(copy.deepcopy(model), cfg)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.copy_(0.3 * torch.randn_like(p))
    peft_model.save_pretrained(folder)
    return peft_model


def edit_adapter_config(folder: Path, **changes) -> None:
    p = Path(folder) / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg.update(changes)
    p.write_text(json.dumps(cfg))


_TOKENIZER_DIR: Path | None = None


def smollm2_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer (from the embedded GGUF) saved once per test session as a HF folder."""
    global _TOKENIZER_DIR
    if _TOKENIZER_DIR is None:
        import tempfile

        from transformers import AutoTokenizer

        from finllm_edge.models import default_model_path

        p = default_model_path()
        from finllm_edge_convert.tokenizer_gguf import repair_gguf_tokenizer

        # transformers rebuilds GPT-2's pre-tokenizer from the GGUF; SmolLM2's real one also splits digits
        tok = repair_gguf_tokenizer(AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name), "smollm")
        _TOKENIZER_DIR = Path(tempfile.mkdtemp(prefix="fe-smollm2-tok-"))
        tok.save_pretrained(_TOKENIZER_DIR)
    return _TOKENIZER_DIR
