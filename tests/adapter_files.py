"""GGUF LoRA adapter files for tests, written with gguf-py and numpy (no torch): random adapters
for a given base GGUF, and hostile variants (wrong architecture, shapes, types, corrupt bytes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output")


def base_shapes(base: Path) -> dict[str, tuple[int, int]]:
    """GGUF ne (n_in, n_out) of every 2-D tensor of a base model."""
    import gguf

    r = gguf.GGUFReader(base)
    return {t.name: (int(t.shape[0]), int(t.shape[1])) for t in r.tensors if len(t.shape) == 2}


def random_lora(base: Path, rank: int = 8, layers=(0, 1, 2, 3), targets=TARGETS, seed: int = 0,
                b_std: float = 0.08) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{base tensor: (A (rank, n_in), B (n_out, rank))} float32, big enough to change greedy text."""
    shapes = base_shapes(base)
    rng = np.random.default_rng(seed)
    out = {}
    for layer in layers:
        for t in targets:
            name = f"blk.{layer}.{t}.weight"
            n_in, n_out = shapes[name]
            a = rng.standard_normal((rank, n_in)).astype(np.float32) / np.sqrt(n_in)
            b = (b_std * rng.standard_normal((n_out, rank))).astype(np.float32)
            out[name] = (a, b)
    return out


def write_lora(path: Path, factors: dict, arch: str = "llama", alpha: float | None = 0.0, dtype=np.float16,
               general_type: str = "adapter", adapter_type: str = "lora", extra_kv=None,
               extra_tensors=None) -> Path:
    """Write a GGUF LoRA as llama.cpp reads it: <name>.lora_a numpy (rank, n_in), <name>.lora_b (n_out, rank)."""
    import gguf

    w = gguf.GGUFWriter(path, arch)
    w.add_type(general_type)
    if adapter_type is not None:
        w.add_string("adapter.type", adapter_type)
    if alpha is not None:
        w.add_float32("adapter.lora.alpha", float(alpha))
    w.add_name(Path(path).stem)
    for k, v in (extra_kv or {}).items():
        v(w, k)
    for name, (a, b) in factors.items():
        w.add_tensor(name + ".lora_a", np.ascontiguousarray(a.astype(dtype)))
        w.add_tensor(name + ".lora_b", np.ascontiguousarray(b.astype(dtype)))
    for name, arr in (extra_tensors or {}).items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def write_lora_q8(path: Path, factors: dict, arch: str = "llama") -> Path:
    """The same adapter with Q8_0 factors (a quantized LoRA: not a type the runtime accepts)."""
    import gguf
    from gguf.quants import quantize

    w = gguf.GGUFWriter(path, arch)
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 0.0)
    for name, (a, b) in factors.items():
        for suffix, arr in ((".lora_a", a), (".lora_b", b)):
            if arr.shape[-1] % 32 == 0:
                q = quantize(arr.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
                w.add_tensor(name + suffix, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                w.add_tensor(name + suffix, arr.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)
