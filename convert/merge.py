"""Stage `merge`: W' = W + s * B @ A, one tensor at a time, into out/merged/ (a HF folder).

The merged folder is the reference ("fp16 merged model") for parity and quality, and the
input of later stages (AWQ scaling, GGUF writing, ONNX export).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from .safetensors_stream import StreamingSafetensorsWriter


def merge_weight(w, a, b, scale: float, fan_in_fan_out: bool = False):
    """Merged weight in float32. `w` is (out, in) for Linear, (in, out) when fan_in_fan_out (Conv1D)."""
    import torch

    delta = (b.to(torch.float32) @ a.to(torch.float32)) * scale
    if fan_in_fan_out:
        delta = delta.T
    if tuple(delta.shape) != tuple(w.shape):
        from .errors import AdapterMismatchError

        raise AdapterMismatchError(f"LoRA delta {tuple(delta.shape)} does not fit base weight {tuple(w.shape)}")
    return w.to(torch.float32) + delta


def merged_tensors(base, adapter,
                   transposed_layout: Callable[[str], bool] | None = None) -> Iterator[tuple[str, object]]:
    """Yield (name, float32 tensor) for every base tensor, LoRA applied where the adapter has a module.

    `transposed_layout(name)` says whether a base weight is stored (in, out) (Conv1D); only then does
    the adapter's fan_in_fan_out flag apply, as in PEFT (which resets it for nn.Linear).
    """
    import torch

    if not getattr(adapter, "resolved", True):
        raise RuntimeError("LoraAdapter.resolve(base) must run before the merge (it decides what PEFT merges)")
    for name in base.tensors.names():
        w = base.tensors.get(name)
        if name in getattr(adapter, "saved", {}):          # modules_to_save: PEFT's trained copy replaces it
            yield name, adapter.saved_tensor(name).to(torch.float32)
        elif name in adapter.modules:
            a, b = adapter.factors(name)
            fifo = adapter.fan_in_fan_out and bool(transposed_layout and transposed_layout(name))
            yield name, merge_weight(w, a, b, adapter.modules[name].scale, fifo)
        else:
            yield name, w.to(torch.float32) if w.is_floating_point() else w


def write_merged(base, adapter, out_dir: Path, dtype: str = "float16", progress=None) -> Path:
    """Stream the merged model into `out_dir` (config.json, model.safetensors, tokenizer files)."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    tdtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    names = base.tensors.names()
    shapes = {n: base.tensors.shape(n) for n in names}
    writer = StreamingSafetensorsWriter(out_dir / "model.safetensors", {n: (shapes[n], dtype) for n in names},
                                        metadata={"format": "pt"})
    with writer:
        for name, t in merged_tensors(base, adapter):
            t = t.to(tdtype).contiguous()
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                from .errors import ConversionError

                mod = adapter.modules.get(name)
                raise ConversionError(
                    f"merged tensor {name} has non-finite values in {dtype}"
                    + (f" (LoRA scale alpha/r = {mod.scale:g})" if mod else "")
                    + "; the adapter's scale or weights are too large for this precision. Check lora_alpha / "
                    "alpha_pattern, or keep the merge in float32 (merged_dtype)")
            writer.write(name, t)
            if progress is not None:
                progress.update(1)
    cfg = base.config
    cfg.dtype = dtype
    if not getattr(cfg, "architectures", None):  # a config read from a GGUF has none; exporters need it
        from .architectures import get_arch

        cfg.architectures = [get_arch(cfg).hf_classes[0]]
    cfg.save_pretrained(out_dir)
    return out_dir
