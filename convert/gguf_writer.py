"""Stage `gguf`: merged HF folder -> F32 / F16 / BF16 GGUF, streamed one tensor at a time.

Header (architecture hyper-parameters, RoPE, tokenizer, general.* provenance) is written
first from shapes alone; then each tensor is read from the memory-mapped merged
safetensors, re-laid out for llama.cpp (architectures.ArchSpec.transform) and written.
The file appears under its final name only when complete (atomic.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .architectures import ArchSpec
from .atomic import atomic_path
from .errors import ConversionError
from .hf_loader import SafetensorsSource
from .tokenizer_gguf import TokenizerSpec


@dataclass(frozen=True)
class FloatType:
    name: str           # "f16"
    ggml: str           # GGMLQuantizationType member
    file_type: str      # LlamaFileType member
    np_dtype: str       # numpy dtype of 2-D weights as written


FLOAT_TYPES: dict[str, FloatType] = {
    "f32": FloatType("f32", "F32", "ALL_F32", "float32"),
    "f16": FloatType("f16", "F16", "MOSTLY_F16", "float16"),
    "bf16": FloatType("bf16", "BF16", "MOSTLY_BF16", "bfloat16"),
}


@dataclass
class Provenance:
    base_name: str
    base_sha256: str
    adapter_name: str
    adapter_sha256: str
    finllm_edge_version: str
    llama_cpp: str
    merged: bool = True       # False: the unmerged base of --adapter-gguf (the LoRA is applied at run time)

    def add_to(self, w) -> None:
        if self.merged:
            w.add_name(f"{self.base_name} + {self.adapter_name}")
            w.add_description("LoRA-merged by finllm-edge convert")
        else:
            w.add_name(self.base_name)
            w.add_description("base model (no LoRA merged) for runtime adapters, by finllm-edge convert")
        w.add_base_model_count(1)
        w.add_base_model_name(0, self.base_name)
        w.add_string("general.base_model.0.sha256", self.base_sha256)
        w.add_string("general.adapter.name", self.adapter_name)
        w.add_string("general.adapter.sha256", self.adapter_sha256)
        w.add_string("general.finllm_edge.version", self.finllm_edge_version)
        w.add_string("general.finllm_edge.llama_cpp", self.llama_cpp)
        w.add_quantized_by("finllm-edge")


def _to_numpy(t, want: str) -> np.ndarray:
    import torch

    if want == "bfloat16":
        return t.to(torch.bfloat16).contiguous().view(torch.int16).numpy()
    return t.to(getattr(torch, want)).contiguous().numpy()


def plan_tensors(src: SafetensorsSource, arch: ArchSpec, config, ftype: FloatType):
    """[(hf_name, gguf_name, shape, out dtype)] in write order, plus extra tensors."""
    n_blocks = int(config.num_hidden_layers)
    plan = []
    for name in src.names():
        if arch.skip_tensor(name, config):
            continue
        gname = arch.gguf_tensor_name(name, n_blocks)
        if gname is None:
            raise ConversionError(
                f"tensor {name} has no GGUF name for architecture {arch.name}; the model has layers this "
                "converter does not know (extend ArchSpec in architectures.py)"
            )
        shape = src.shape(name)
        out_dtype = ftype.np_dtype if len(shape) >= 2 else "float32"   # norms and biases stay F32
        plan.append((name, gname, shape, out_dtype))
    return plan


def write_gguf(merged_dir: Path, out_path: Path, ftype_name: str, arch: ArchSpec, config,
               tokenizer: TokenizerSpec, provenance: Provenance, progress=None) -> Path:
    import gguf

    ftype = FLOAT_TYPES[ftype_name]
    src = SafetensorsSource([Path(merged_dir) / "model.safetensors"])
    plan = plan_tensors(src, arch, config, ftype)
    extras = arch.extra_tensors(config)
    with atomic_path(Path(out_path)) as tmp:
        w = gguf.GGUFWriter(tmp, arch.gguf_arch)
        try:
            provenance.add_to(w)
            arch.write_hparams(w, config)
            w.add_file_type(int(getattr(gguf.LlamaFileType, ftype.file_type)))
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
            tokenizer.add_to(w)
            for _, gname, shape, dt in plan:
                raw = getattr(gguf.GGMLQuantizationType, {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}[dt])
                nbytes = int(np.prod(shape)) * (4 if dt == "float32" else 2)
                w.add_tensor_info(gname, shape, np.dtype(np.float16), nbytes, raw_dtype=raw)
            for gname, arr in extras:
                w.add_tensor_info(gname, arr.shape, arr.dtype, arr.nbytes)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            for hf_name, _, _, dt in plan:
                t = src.get(hf_name).float()
                arr = _to_numpy(t, dt)
                arr = arch.transform(hf_name, arr, config)
                w.write_tensor_data(np.ascontiguousarray(arr))
                if progress is not None:
                    progress.update(1)
            for _, arr in extras:
                w.write_tensor_data(arr)
        finally:
            w.close()
    return Path(out_path)
