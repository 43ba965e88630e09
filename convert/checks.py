"""Stage `check`: everything that can be wrong with the inputs, found before any real work.

Order: files exist -> adapter_config.json schema, plain LoRA -> architecture supported -> output folder
usable (writable, not under a file, not someone else's; nothing is created) -> adapter fits the base as
PEFT resolves it (targets, layers, shapes) -> enough disk for the peak of the run -> no NaN/Inf.
The tokenizer gate (tokenizer_gguf.gate) runs right after, still in the `check` stage.
Each failure is a typed error (see errors.py) whose message says what to do.
"""

from __future__ import annotations

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
    out_inspection: object = None            # outdir.Inspection
    disk_breakdown: dict = field(default_factory=dict)


def require_file(path: Path, what: str, flag: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputNotFoundError(f"{what} {path} does not exist; pass {flag} FILE")
    return path


def check_output_writable(out: Path, plan=None, force: bool = False):
    """Inspect --out without touching it (see outdir.py): writable, not under a file, not a foreign folder."""
    from . import outdir

    return outdir.inspect(out, plan or outdir.Plan([], []), force)


# Bytes per parameter of each GGUF output, with headroom.
def estimate_disk(n_params: int, outputs: list[str], *, n_vocab: int = 0, tokenizer_bytes: int = 0,
                  awq_targets: list[str] | tuple = (), awq_outputs: list[str] | tuple = (), imatrix: bool = False,
                  mixed: list[str] | tuple = (), onnx: bool = False, eval_tokens: int = 0, cross_check: bool = False,
                  merged_bytes_per_param: float = 2.0, task_base: bool = False) -> dict[str, int]:
    """Peak disk use of a run, by part (bytes). Intermediates are counted as if they all coexisted
    (they nearly do: AWQ's scaled float32 folders stay, its F16 GGUFs live until quantize ends).

    `outputs`: float and quant types of the plain artifacts; `awq_outputs`: quant types of AWQ artifacts
    (each also made with an imatrix when `imatrix`); every GGUF carries the tokenizer (`tokenizer_bytes`)."""
    def gguf(kind: str) -> float:
        return BYTES_PER_PARAM.get(kind, 2.0) * n_params + tokenizer_bytes

    parts = {"merged": merged_bytes_per_param * n_params}
    parts["gguf"] = sum(gguf(o) for o in outputs)
    quants = [o for o in outputs if o not in ("f32", "f16", "bf16")]
    if imatrix:
        parts["imatrix gguf"] = sum(gguf(q) for q in quants) + 0.02 * n_params * (1 + len(awq_targets))
    if awq_targets:
        parts["awq scaled float32 folders"] = 4.0 * n_params * len(awq_targets)
        parts["awq F16 intermediates (.work)"] = sum(gguf("f16") for _ in awq_targets)
        parts["awq gguf"] = sum(gguf(q) for q in awq_outputs) * (2 if imatrix else 1)
    if mixed:
        parts["mixed-precision artifact + probe/candidate (.work)"] = sum(3 * gguf("q8_0") for _ in mixed)
    if onnx:
        parts["onnx int4"] = 1.0 * n_params
    if task_base:    # the finance task runs the base without the adapter: an F16 GGUF of an HF base
        parts["task: base F16 GGUF (.work)"] = gguf("f16")
    if cross_check and eval_tokens:
        parts["llama-perplexity KLD base logits (.work)"] = eval_tokens / 2 * 2 * (n_vocab + 16) + 4 * eval_tokens
    total = sum(parts.values()) * DISK_HEADROOM
    return {**{k: int(v) for k, v in parts.items()}, "total": int(total)}


def estimate_bytes(n_params: int, outputs: list[str]) -> int:
    return estimate_disk(n_params, outputs)["total"]


def check_disk(out: Path, needed: int, breakdown: dict | None = None) -> None:
    probe = Path(out).expanduser().absolute()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        parts = ""
        if breakdown:
            parts = " (" + ", ".join(f"{k} {v / 2**20:.0f}" for k, v in breakdown.items() if k != "total") + " MiB)"
        raise InsufficientDiskError(
            f"not enough disk in {out}: the run needs about {needed / 2**20:.0f} MiB at its peak{parts}, "
            f"{free / 2**20:.0f} MiB is free; free space, pick another --out, or request fewer --quant types / no --awq"
        )


def check_adapter_fits(base: BaseModel, adapter: LoraAdapter, arch: ArchSpec) -> list[str]:
    """Resolve the adapter against the base as PEFT does (adapter.resolve), then check every merged module."""
    if not adapter.resolved:
        adapter.resolve(base)
    names = set(base.tensors.names())
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
                f"the adapter was trained on a different base (base hidden size {base.config.hidden_size}); "
                "pass the base model it was trained on"
            )
    return list(adapter.notes)


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
              scan_finite: bool = True, progress_factory=None, plan=None, force: bool = False,
              disk_estimate=None) -> Preflight:
    """Run every input check without touching --out; return the opened inputs for the next stages.

    `disk_estimate(n_params, base) -> dict` overrides the default estimate (the pipeline passes one that
    knows the AWQ / imatrix / ONNX options)."""
    for flag, f in text_files.items():
        require_file(f, "text file", flag)
    lora_path = Path(lora_path).expanduser()
    if not lora_path.is_dir():
        raise InputNotFoundError(f"adapter folder {lora_path} does not exist; pass --lora DIR (a PEFT adapter)")
    adapter = LoraAdapter.load(lora_path)          # schema first: cheap, and no traceback for a bad config
    base = load_base(base_path)
    arch = get_arch(base.config)
    inspection = check_output_writable(out, plan, force)
    notes = check_adapter_fits(base, adapter, arch)
    n_params = sum(_numel(base.tensors.shape(n)) for n in base.tensors.names())
    breakdown = disk_estimate(n_params, base) if disk_estimate else estimate_disk(n_params, outputs)
    check_disk(Path(out).expanduser(), breakdown["total"], breakdown)
    if scan_finite:
        check_finite(adapter.iter_tensors(), "adapter")
        bar = progress_factory(len(base.tensors.names()), "check NaN/Inf") if progress_factory else None
        check_finite(base.iter_tensors(), "base model", bar)
        if bar is not None:
            bar.close()
    pre = Preflight(base, adapter, arch, n_params, breakdown["total"], notes)
    pre.out_inspection = inspection
    pre.disk_breakdown = breakdown
    return pre


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
