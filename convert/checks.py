"""Stage `check`: everything that can be wrong with the inputs, found before any real work.

Order: files exist -> architecture supported -> adapter is plain LoRA -> output writable ->
adapter fits the base (targets, layer count, hidden size, shapes) -> enough disk -> no NaN/Inf.
Each failure is a typed error (see errors.py) whose message says what to do.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .adapter import LoraAdapter
from .architectures import ArchSpec, get_arch
from .errors import (
    AdapterMismatchError,
    CorruptModelError,
    InputNotFoundError,
    InsufficientDiskError,
    OutputNotWritableError,
)
from .hf_loader import BaseModel, load_base

# Bytes per parameter of each output (merged fp16 folder, float GGUFs, quants), with headroom.
BYTES_PER_PARAM = {"merged": 2.0, "f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.07, "q4_0": 0.57,
                   "q4_k_m": 0.62, "q4_k_s": 0.6, "q5_k_m": 0.72, "q6_k": 0.83, "q4_1": 0.63, "q5_0": 0.7}
DISK_HEADROOM = 1.10
_LAYER = re.compile(r"\.layers\.(\d+)\.")


@dataclass
class Preflight:
    base: BaseModel
    adapter: LoraAdapter
    arch: ArchSpec
    n_params: int
    bytes_needed: int
    notes: list[str] = field(default_factory=list)


def require_file(path: Path, what: str, flag: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputNotFoundError(f"{what} {path} does not exist; pass {flag} FILE")
    return path


def check_output_writable(out: Path) -> None:
    out = Path(out).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise OutputNotWritableError(
            f"output folder {out} is not writable ({exc.strerror or exc}); choose another --out or fix its permissions"
        ) from exc


def estimate_bytes(n_params: int, outputs: list[str]) -> int:
    return int(sum(BYTES_PER_PARAM.get(o, 2.0) for o in ["merged", *outputs]) * n_params * DISK_HEADROOM)


def check_disk(out: Path, needed: int) -> None:
    free = shutil.disk_usage(out).free
    if free < needed:
        raise InsufficientDiskError(
            f"not enough disk in {out}: the outputs need about {needed / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB is free; free space, pick another --out, or request fewer --quant types"
        )


def check_adapter_fits(base: BaseModel, adapter: LoraAdapter, arch: ArchSpec) -> list[str]:
    cfg = base.config
    names = set(base.tensors.names())
    notes = []
    bad_targets = sorted(adapter.target_suffixes - set(arch.lora_targets))
    if bad_targets:
        raise AdapterMismatchError(
            f"adapter targets {bad_targets}, which a {arch.name} base does not have "
            f"(its linear layers: {', '.join(arch.lora_targets)}); this adapter was trained on another architecture"
        )
    layers = [int(m.group(1)) for m in map(_LAYER.search, adapter.modules) if m]
    if layers and max(layers) >= cfg.num_hidden_layers:
        raise AdapterMismatchError(
            f"adapter has layer {max(layers)} but the base has {cfg.num_hidden_layers} layers; "
            "the adapter was trained on a different (deeper) base model"
        )
    for wname, mod in adapter.modules.items():
        if wname not in names:
            raise AdapterMismatchError(
                f"adapter module {mod.module} has no weight {wname} in the base; check --base matches the adapter"
            )
        shape = tuple(base.tensors.shape(wname))
        want = (mod.out_features, mod.in_features)
        if shape != want and not (adapter.fan_in_fan_out and shape == want[::-1]):
            raise AdapterMismatchError(
                f"adapter {mod.module} expects a weight of shape {want} (out, in) but the base has {shape}: "
                f"the adapter was trained on a different base (base hidden size {cfg.hidden_size}); "
                "pass the base model it was trained on"
            )
    if adapter.fan_in_fan_out:
        notes.append("adapter has fan_in_fan_out=true but the targets are nn.Linear; ignored, as PEFT does")
    return notes


def check_finite(named_tensors, what: str, progress=None) -> None:
    import torch

    for name, t in named_tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n_bad = int((~torch.isfinite(t)).sum())
            raise CorruptModelError(
                f"{what} tensor {name} contains {n_bad} NaN/Inf values; the file is corrupt or the training "
                "diverged. Re-download the base / retrain the adapter"
            )
        if progress is not None:
            progress.update(1)


def preflight(base_path: Path, lora_path: Path, out: Path, outputs: list[str], text_files: dict[str, Path],
              scan_finite: bool = True, progress_factory=None) -> Preflight:
    """Run every input check; return the opened inputs for the next stages."""
    for flag, f in text_files.items():
        require_file(f, "text file", flag)
    base = load_base(base_path)
    lora_path = Path(lora_path).expanduser()
    if not lora_path.is_dir():
        raise InputNotFoundError(f"adapter folder {lora_path} does not exist; pass --lora DIR (a PEFT adapter)")
    arch = get_arch(base.config)
    adapter = LoraAdapter.load(lora_path)
    check_output_writable(out)
    notes = check_adapter_fits(base, adapter, arch)
    n_params = sum(_numel(base.tensors.shape(n)) for n in base.tensors.names())
    needed = estimate_bytes(n_params, outputs)
    check_disk(Path(out).expanduser(), needed)
    if scan_finite:
        check_finite(adapter.iter_tensors(), "adapter")
        bar = progress_factory(len(base.tensors.names()), "check NaN/Inf") if progress_factory else None
        check_finite(base.iter_tensors(), "base model", bar)
        if bar is not None:
            bar.close()
    return Preflight(base, adapter, arch, n_params, needed, notes)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
