"""A PEFT LoRA adapter folder: adapter_config.json + adapter_model.safetensors (memory-mapped).

Only plain LoRA merges into W' = W + s * B @ A. Variants that change that formula are named
and refused (UnsupportedAdapterError) before any work is done.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import CorruptModelError, InputNotFoundError, UnsupportedAdapterError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")


def _truthy(v) -> bool:
    return bool(v) and v not in ("none", "None")


# (config key, test on its value, how to name the variant). Checked in order; all are reported.
UNSUPPORTED_OPTIONS = (
    ("use_dora", _truthy, "DoRA (use_dora=true): the magnitude vector changes the merge formula"),
    ("modules_to_save", _truthy, "modules_to_save (fully trained extra modules, e.g. lm_head)"),
    ("trainable_token_indices", _truthy, "trainable_token_indices (trained embedding rows)"),
    ("lora_bias", _truthy, "lora_bias=true (a trained bias on lora_B)"),
    ("bias", lambda v: v not in (None, "none"), "bias != 'none' (trained base biases not in the adapter file)"),
    ("target_parameters", _truthy, "target_parameters (LoRA on raw parameters, e.g. MoE experts)"),
    ("layer_replication", _truthy, "layer_replication (the adapter duplicates base layers)"),
    ("use_qalora", _truthy, "QA-LoRA (use_qalora=true)"),
    ("alora_invocation_tokens", _truthy, "activated LoRA (alora_invocation_tokens)"),
    ("megatron_config", _truthy, "Megatron tensor-parallel LoRA (megatron_config)"),
    ("use_bdlora", _truthy, "block-diagonal LoRA (use_bdlora)"),
    ("arrow_config", _truthy, "Arrow adapter routing (arrow_config)"),
)


def pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches a module name suffix (regex)."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


@dataclass(frozen=True)
class LoraModule:
    module: str          # base module name, e.g. "model.layers.0.self_attn.q_proj"
    a_key: str
    b_key: str
    rank: int
    in_features: int
    out_features: int
    scale: float         # alpha / r, or alpha / sqrt(r) with use_rslora

    @property
    def base_weight(self) -> str:
        return self.module + ".weight"


class LoraAdapter:
    def __init__(self, folder: Path, config: dict, modules: dict[str, LoraModule], handle):
        self.folder = folder
        self.config = config
        self.modules = modules            # keyed by base weight name
        self._h = handle

    @property
    def files(self) -> list[Path]:
        return [self.folder / CONFIG_FILE, self.folder / WEIGHTS_FILE]

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.config.get("fan_in_fan_out", False))

    @property
    def target_suffixes(self) -> set[str]:
        return {m.module.rsplit(".", 1)[-1] for m in self.modules.values()}

    def factors(self, base_weight: str):
        """(A, B) torch tensors for one module."""
        m = self.modules[base_weight]
        return self._h.get_tensor(m.a_key), self._h.get_tensor(m.b_key)

    def iter_tensors(self):
        for k in self._h.keys():
            yield k, self._h.get_tensor(k)

    @classmethod
    def load(cls, folder: Path) -> "LoraAdapter":
        from safetensors import safe_open

        folder = Path(folder).expanduser()
        cfg_path, w_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        if not cfg_path.exists():
            raise InputNotFoundError(f"adapter {folder}: {CONFIG_FILE} is missing; pass --lora a PEFT adapter folder")
        if not w_path.exists():
            hint = " (only adapter_model.bin found: re-save with safe_serialization=True)" \
                if (folder / "adapter_model.bin").exists() else ""
            raise InputNotFoundError(f"adapter {folder}: {WEIGHTS_FILE} is missing{hint}")
        try:
            config = json.loads(cfg_path.read_text())
        except ValueError as exc:
            raise CorruptModelError(f"{cfg_path} is not valid JSON ({exc}); re-save the adapter") from exc
        check_supported(config, cfg_path)
        try:
            h = safe_open(str(w_path), framework="pt")
        except Exception as exc:
            raise CorruptModelError(f"{w_path} is not a readable safetensors file ({exc}); re-save the adapter") from exc
        return cls(folder, config, parse_modules(config, h, w_path), h)


def check_supported(config: dict, where: Path) -> None:
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise UnsupportedAdapterError(
            f"{where}: peft_type {peft_type} is not supported; only plain LoRA adapters can be merged"
        )
    found = [label for key, bad, label in UNSUPPORTED_OPTIONS if key in config and bad(config[key])]
    if found:
        raise UnsupportedAdapterError(
            f"{where}: unsupported LoRA variant(s): {'; '.join(found)}. "
            "Retrain as plain LoRA, or merge with PEFT's merge_and_unload() and pass the merged folder as --base"
        )


def parse_modules(config: dict, handle, where: Path) -> dict[str, LoraModule]:
    pairs: dict[str, dict[str, str]] = {}
    for key in handle.keys():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        m = _KEY.match(name)
        if not m:
            what = "DoRA magnitude vector" if "lora_magnitude_vector" in key else \
                "LoRA on an embedding" if "lora_embedding" in key else "a non-LoRA tensor"
            raise UnsupportedAdapterError(
                f"{where}: tensor {key!r} is {what}; only lora_A/lora_B pairs of linear layers can be merged"
            )
        pairs.setdefault(m["module"], {})[m["ab"]] = key
    modules: dict[str, LoraModule] = {}
    r_default, alpha_default = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise CorruptModelError(f"{where}: {module} has lora_{''.join(ab)} but not both lora_A and lora_B")
        a_shape = handle.get_slice(ab["A"]).get_shape()
        b_shape = handle.get_slice(ab["B"]).get_shape()
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]:
            raise CorruptModelError(f"{where}: {module} lora_A {a_shape} and lora_B {b_shape} do not chain")
        rank = int(a_shape[0])
        r_cfg = int(pattern_value(config.get("rank_pattern"), module, r_default))
        if r_cfg != rank:
            raise CorruptModelError(
                f"{where}: {module} has rank {rank} in the weights but {r_cfg} in {CONFIG_FILE} "
                "(r / rank_pattern); the config does not belong to these weights"
            )
        alpha = float(pattern_value(config.get("alpha_pattern"), module, alpha_default))
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        modules[module + ".weight"] = LoraModule(module, ab["A"], ab["B"], rank, int(a_shape[1]), int(b_shape[0]), scale)
    if not modules:
        raise CorruptModelError(f"{where}: the adapter has no lora_A/lora_B tensors")
    return modules
