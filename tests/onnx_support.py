"""Shared model folders for the ONNX tests (helpers, not tests; imported by tests/test_onnx_*.py).

Reference HF folders are cached under the finllm-edge cache (written atomically, reused across
runs): SmolLM2 converted from the embedded GGUF, and tiny seeded random Llama/Qwen2 models that
reuse SmolLM2's tokenizer. ONNX exports of the tiny models are cheap (about a second) and are
made per test module in tmp folders.
"""

from __future__ import annotations

from pathlib import Path

from finllm_edge.models import default_model_path
from finllm_edge.paths import cache_dir
from finllm_edge_convert.onnx_reference import hf_dir_from_gguf, tiny_random_hf_dir


def smollm2_hf_dir() -> Path:
    return hf_dir_from_gguf(default_model_path(), cache_dir() / "hf" / "SmolLM2-135M-Instruct")


def tiny_hf_dir(arch: str = "llama", seed: int = 0) -> Path:
    return tiny_random_hf_dir(cache_dir() / "hf" / f"tiny-{arch}-seed{seed}", arch,
                              tokenizer_dir=smollm2_hf_dir(), seed=seed)
