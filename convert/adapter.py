"""A PEFT LoRA adapter folder: adapter_config.json + adapter_model.safetensors (memory-mapped).

Three steps, all before any heavy work:
1. `validate_config`: a schema for adapter_config.json (types, ranges, regexes that compile), so a
   malformed config is an AdapterConfigError with the field named, never a traceback.
2. `LoraAdapter.load`: the tensors in the file (lora_A/lora_B pairs, modules_to_save copies).
3. `LoraAdapter.resolve(base)`: which base modules PEFT itself would adapt. PEFT 0.21.2 (the pinned
   version) is run on a weight-less ("meta") copy of the base, in a forked child with a deadline, so
   target_modules (list, regex or "all-linear"), layers_to_transform/layers_pattern, exclude_modules,
   modules_to_save and rank_pattern/alpha_pattern mean exactly what they mean in PEFT, and a regex that
   backtracks catastrophically gives an error in seconds instead of hanging.

What is merged is then exactly what PEFT's `merge_and_unload()` produces:
- a targeted module: W + scaling * B @ A, with PEFT's own rank and scaling for that module;
- a modules_to_save module: its trained copy from the file replaces the base weights;
- weights in the file for modules the config does not target: ignored, as PEFT ignores them (they are
  listed in the notes);
- a config PEFT refuses (no target found, r=0, layers_to_transform with a regex target ...) is refused.
Deliberate differences from PEFT (both are refusals, never a different merge): a targeted module with
no weights in the file (PEFT leaves it at its initialisation: a silent no-op, or random with
init_lora_weights=false), and DoRA magnitude / LoRA-embedding tensors under a plain-LoRA config
(the config lost a variant flag; merging without them would drop trained parameters).
Variants that change the merge formula are named and refused (UnsupportedAdapterError).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import (
    AdapterConfigError,
    AdapterMismatchError,
    CorruptModelError,
    InputNotFoundError,
    UnsupportedAdapterError,
)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")
MAX_ALPHA = 65504.0       # fp16's largest value: a larger alpha cannot give finite fp16 merged weights
MAX_RANK = 1 << 16
PATTERN_DEADLINE_S = 5.0  # + PATTERN_S_PER_MODULE per base module: PEFT's whole target resolution
PATTERN_S_PER_MODULE = 0.005


def _truthy(v) -> bool:
    return bool(v) and v not in ("none", "None")


# (config key, test on its value, how to name the variant). Checked in order; all are reported.
UNSUPPORTED_OPTIONS = (
    ("use_dora", _truthy, "DoRA (use_dora=true): the magnitude vector changes the merge formula"),
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


# ---- 1. schema ------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_rank(v, what: str, where) -> None:
    if not _is_int(v) or not 1 <= v <= MAX_RANK:
        raise AdapterConfigError(
            f"{where}: {what} must be an integer rank >= 1 (got {v!r}); it is the inner dimension of lora_A/lora_B. "
            "Fix the config or re-save the adapter with PEFT"
        )


def _check_alpha(v, what: str, where) -> None:
    # 0 makes the adapter a silent no-op and a negative alpha inverts what was trained: PEFT accepts both
    # without a word, but neither is a real training setup, so they are refused as config errors.
    if not _is_number(v) or not math.isfinite(v) or not 0 < v <= MAX_ALPHA:
        raise AdapterConfigError(
            f"{where}: {what} must be a finite number in (0, {MAX_ALPHA:g}] (got {v!r}); the merge scales the "
            "LoRA delta by alpha / r. Fix the config (lora_alpha is usually 8..128)"
        )


def _compile(pattern: str, field_name: str, where, wrap: str = "{}") -> None:
    try:
        re.compile(wrap.format(pattern))
    except (re.error, RecursionError, OverflowError) as exc:
        raise AdapterConfigError(
            f"{where}: {field_name} {pattern!r} is not a valid regular expression ({exc})") from exc


def _str_or_list(cfg: dict, key: str, where, allow_str: bool = True) -> list[str] | str | None:
    v = cfg.get(key)
    if v is None:
        return None
    if isinstance(v, str) and allow_str:
        if not v:
            raise AdapterConfigError(f"{where}: {key} is an empty string")
        return v
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) and x for x in v):
        return list(v)
    kinds = "a string or a list of strings" if allow_str else "a list of strings"
    raise AdapterConfigError(f"{where}: {key} must be {kinds} (got {v!r})")


def validate_config(config, where) -> dict:
    """Check adapter_config.json against the schema; raise AdapterConfigError naming the field."""
    if not isinstance(config, dict):
        raise AdapterConfigError(
            f"{where}: the config must be a JSON object (got a JSON {type(config).__name__}); "
            "pass the folder PEFT's save_pretrained() wrote"
        )
    peft_type = config.get("peft_type", "LORA")
    if not isinstance(peft_type, str):
        raise AdapterConfigError(f"{where}: peft_type must be a string (got {peft_type!r})")
    _check_rank(config.get("r", 8), "r", where)
    _check_alpha(config.get("lora_alpha", 8), "lora_alpha", where)
    for key in ("use_rslora", "fan_in_fan_out"):
        if key in config and config[key] is not None and not isinstance(config[key], bool):
            raise AdapterConfigError(f"{where}: {key} must be true or false (got {config[key]!r})")
    for key, check in (("rank_pattern", _check_rank), ("alpha_pattern", _check_alpha)):
        pats = config.get(key) or {}
        if not isinstance(pats, dict):
            raise AdapterConfigError(f"{where}: {key} must be an object {{regex: value}} (got {pats!r})")
        for pat, value in pats.items():
            _compile(pat, f"{key} key", where, r"(.*\.)?({})$")
            check(value, f"{key}[{pat!r}]", where)
    target = _str_or_list(config, "target_modules", where)
    if isinstance(target, str):
        _compile(target, "target_modules", where)
    exclude = _str_or_list(config, "exclude_modules", where)
    if isinstance(exclude, str):
        _compile(exclude, "exclude_modules", where)
    for m in _str_or_list(config, "modules_to_save", where, allow_str=False) or []:
        _compile(m, "modules_to_save entry", where, r"(^|.*\.){}($|\..*)")
    layers = config.get("layers_to_transform")
    if layers is not None:
        items = layers if isinstance(layers, list) else [layers]
        if not all(_is_int(i) and i >= 0 for i in items):
            raise AdapterConfigError(
                f"{where}: layers_to_transform must be a layer index >= 0 or a list of them (got {layers!r})")
    lp = _str_or_list(config, "layers_pattern", where)
    for p in [lp] if isinstance(lp, str) else lp or []:
        _compile(p, "layers_pattern", where, r"(?:^|.*?\.){}\.(?P<idx>\d+)\.")
    return config


def check_supported(config: dict, where) -> None:
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


# ---- 2./3. tensors and PEFT's targeting ------------------------------------------------------

@dataclass(frozen=True)
class LoraModule:
    module: str          # base module name, e.g. "model.layers.0.self_attn.q_proj"
    a_key: str
    b_key: str
    rank: int
    in_features: int
    out_features: int
    scale: float         # PEFT's scaling: alpha / r, or alpha / sqrt(r) with use_rslora (per-module patterns)

    @property
    def base_weight(self) -> str:
        return self.module + ".weight"


@dataclass
class Resolution:
    """What PEFT would do with this config on this base (computed by PEFT itself)."""
    lora: dict[str, tuple[int, float, int, int]]     # module -> (r, scaling, in_features, out_features)
    saved: list[str]                                 # modules wrapped by modules_to_save
    linear: list[str]                                # every nn.Linear of the base (for messages)
    warnings: list[str] = field(default_factory=list)


class LoraAdapter:
    def __init__(self, folder: Path, config: dict, pairs: dict[str, dict[str, str]], others: dict[str, str], handle):
        self.folder = folder
        self.config = config
        self._pairs = pairs               # module -> {"A": key, "B": key} as found in the file
        self._others = others             # base-style tensor name -> file key (modules_to_save copies, strays)
        self._h = handle
        self.modules: dict[str, LoraModule] = {}   # keyed by base weight name; filled by resolve()
        self.saved: dict[str, str] = {}             # base tensor name -> file key (replaces the base tensor)
        self.notes: list[str] = []
        self.resolved = False

    @property
    def files(self) -> list[Path]:
        return [self.folder / CONFIG_FILE, self.folder / WEIGHTS_FILE]

    @property
    def fan_in_fan_out(self) -> bool:
        return bool(self.config.get("fan_in_fan_out", False))

    @property
    def target_suffixes(self) -> set[str]:
        return {m.module.rsplit(".", 1)[-1] for m in self.modules.values()}

    @property
    def file_modules(self) -> list[str]:
        return sorted(self._pairs)

    def factors(self, base_weight: str):
        """(A, B) torch tensors for one module."""
        m = self.modules[base_weight]
        return self._h.get_tensor(m.a_key), self._h.get_tensor(m.b_key)

    def saved_tensor(self, base_name: str):
        return self._h.get_tensor(self.saved[base_name])

    def iter_tensors(self):
        for k in self._h.keys():
            yield k, self._h.get_tensor(k)

    @classmethod
    def load(cls, folder: Path, base=None) -> "LoraAdapter":
        """Open and validate the adapter; with `base` (hf_loader.BaseModel), also resolve it against the base."""
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
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise AdapterConfigError(f"{cfg_path} is not valid JSON ({exc}); re-save the adapter") from exc
        validate_config(config, cfg_path)
        check_supported(config, cfg_path)
        try:
            h = safe_open(str(w_path), framework="pt")
        except Exception as exc:
            raise CorruptModelError(
                f"{w_path} is not a readable safetensors file ({exc}); re-save the adapter") from exc
        pairs, others = _split_keys(h, w_path)
        adapter = cls(folder, config, pairs, others, h)
        if base is not None:
            adapter.resolve(base)
        return adapter

    def resolve(self, base) -> "LoraAdapter":
        """Decide, as PEFT does, which modules are merged and which file tensors are used."""
        where = self.folder / CONFIG_FILE
        res = peft_resolution(self.config, base.config, where)
        cfg = base.config
        tied = bool(getattr(cfg, "tie_word_embeddings", False))
        base_names = set(base.tensors.names())
        modules: dict[str, LoraModule] = {}
        known = set(res.linear) | {n.rsplit(".", 1)[0] for n in base_names}
        unknown = sorted(set(self._pairs) - known)
        if unknown:
            layers = [int(m.group(1)) for m in map(re.compile(r"\.layers\.(\d+)\.").search, unknown) if m]
            n_layers = getattr(cfg, "num_hidden_layers", None)
            if layers and n_layers is not None and max(layers) >= n_layers:
                raise AdapterMismatchError(
                    f"adapter has layer {max(layers)} but the base has {n_layers} layers; "
                    "the adapter was trained on a different (deeper) base model")
            raise AdapterMismatchError(
                f"adapter has LoRA weights for {', '.join(sorted({u.rsplit('.', 1)[-1] for u in unknown}))}, which "
                f"this {getattr(cfg, 'model_type', '')} base does not have (its linear layers: "
                f"{', '.join(sorted({n.rsplit('.', 1)[-1] for n in res.linear}))}); this adapter was trained on "
                "another architecture")
        missing = [m for m in res.lora if m not in self._pairs]
        if missing:
            raise AdapterMismatchError(
                f"{where}: the config targets {len(missing)} module(s) with no lora_A/lora_B weights in "
                f"{WEIGHTS_FILE} (first: {missing[0]}). PEFT would leave them untrained; the config does not "
                "belong to these weights (check target_modules / layers_to_transform)"
            )
        for module, (r, scaling, fin, fout) in res.lora.items():
            ab = self._pairs[module]
            a_shape = tuple(self._h.get_slice(ab["A"]).get_shape())
            b_shape = tuple(self._h.get_slice(ab["B"]).get_shape())
            if a_shape != (r, fin) or b_shape != (fout, r):
                rank = a_shape[0] if len(a_shape) == 2 else "?"
                if rank != r and len(a_shape) == 2 and a_shape[1] == fin and b_shape == (fout, rank):
                    raise CorruptModelError(
                        f"{where}: {module} has rank {rank} in the weights but {r} in {CONFIG_FILE} "
                        "(r / rank_pattern); the config does not belong to these weights"
                    )
                raise AdapterMismatchError(
                    f"adapter {module}: lora_A {a_shape} / lora_B {b_shape} do not fit the base layer "
                    f"({fout} out, {fin} in, rank {r}): the adapter was trained on a different base "
                    f"(base hidden size {cfg.hidden_size}); pass the base model it was trained on"
                )
            if module + ".weight" not in base_names:
                raise AdapterMismatchError(
                    f"adapter module {module} has no weight {module}.weight in the base"
                    + (" (tied to the token embedding: LoRA on a tied lm_head cannot be merged into one "
                       "GGUF tensor)" if tied and module == "lm_head" else "")
                    + "; check --base matches the adapter")
            modules[module + ".weight"] = LoraModule(module, ab["A"], ab["B"], r, fin, fout, scaling)
        ignored = sorted(set(self._pairs) - set(res.lora))
        if ignored:
            self.notes.append(
                f"adapter: {len(ignored)} LoRA module(s) in {WEIGHTS_FILE} are not targeted by the config and were "
                f"ignored, as PEFT ignores them (e.g. {', '.join(ignored[:3])})")
        saved: dict[str, str] = {}
        for module in res.saved:
            if tied and module.split(".")[-1] in ("lm_head", "embed_tokens"):
                raise UnsupportedAdapterError(
                    f"{where}: modules_to_save includes {module}, which this base ties to the "
                    f"{'token embedding' if module.endswith('lm_head') else 'output layer'}; the trained copy would "
                    "untie them. Merge with PEFT's merge_and_unload() and pass the merged folder as --base")
            for name, key in self._others.items():
                if name.startswith(module + ".") and name[len(module) + 1:].count(".") == 0:
                    if name not in base_names:
                        raise AdapterMismatchError(f"{where}: modules_to_save tensor {key} has no {name} in the base")
                    want, got = tuple(base.tensors.shape(name)), tuple(self._h.get_slice(key).get_shape())
                    if want != got:
                        raise AdapterMismatchError(
                            f"{where}: modules_to_save tensor {key} has shape {got} but the base {name} is {want}; "
                            "the adapter was trained on a different base")
                    saved[name] = key
        stray = sorted(set(self._others) - set(saved))
        if stray:
            self.notes.append(f"adapter: {len(stray)} tensor(s) in {WEIGHTS_FILE} belong to no targeted or "
                              f"modules_to_save module and were ignored, as PEFT ignores them (e.g. {stray[0]})")
        self.notes += [f"PEFT: {w}" for w in res.warnings]
        if self.fan_in_fan_out:
            self.notes.append("adapter has fan_in_fan_out=true but the targets are nn.Linear; ignored, as PEFT does")
        self.modules, self.saved, self.resolved = modules, saved, True
        return self


def _split_keys(handle, where: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    pairs: dict[str, dict[str, str]] = {}
    others: dict[str, str] = {}
    for key in handle.keys():
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        m = _KEY.match(name)
        if m:
            pairs.setdefault(m["module"], {})[m["ab"]] = key
            continue
        if "lora_magnitude_vector" in key or "lora_embedding" in key:
            what = "DoRA magnitude vector" if "lora_magnitude_vector" in key else "LoRA on an embedding"
            raise UnsupportedAdapterError(
                f"{where}: tensor {key!r} is a {what} but the config describes plain LoRA; only lora_A/lora_B "
                "pairs of linear layers can be merged (the config lost a variant flag, or the adapter is not LoRA)"
            )
        others[name.replace(".modules_to_save.default.", ".")] = key
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise CorruptModelError(f"{where}: {module} has lora_{''.join(ab)} but not both lora_A and lora_B")
        a_shape = handle.get_slice(ab["A"]).get_shape()
        b_shape = handle.get_slice(ab["B"]).get_shape()
        if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != b_shape[1]:
            raise CorruptModelError(f"{where}: {module} lora_A {a_shape} and lora_B {b_shape} do not chain")
    if not pairs and not others:
        raise CorruptModelError(f"{where}: the adapter has no lora_A/lora_B tensors")
    return pairs, others


def _peft_config(config: dict, where):
    import dataclasses

    from peft import LoraConfig

    names = {f.name for f in dataclasses.fields(LoraConfig)}
    kw = {k: v for k, v in config.items() if k in names and k not in ("peft_type", "auto_mapping", "revision",
                                                                        "base_model_name_or_path")}
    kw["inference_mode"] = True
    try:
        return LoraConfig(**kw)
    except (ValueError, TypeError) as exc:
        raise AdapterConfigError(f"{where}: PEFT refuses this config: {exc}") from exc


def _resolve_in_child(peft_cfg, meta_model, conn) -> None:
    """Child process: run PEFT's injection on the meta model; send back what it adapted."""
    import warnings

    try:
        from peft import inject_adapter_in_model
        from peft.tuners.lora import LoraLayer
        from peft.utils import ModulesToSaveWrapper
        from peft.utils.other import set_additional_trainable_modules

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            inject_adapter_in_model(peft_cfg, meta_model, adapter_name="default")
            if peft_cfg.modules_to_save:
                set_additional_trainable_modules(meta_model, peft_cfg, meta_model.config.to_dict(), "default")
        lora, saved = {}, []
        for name, mod in meta_model.named_modules():
            if isinstance(mod, LoraLayer) and "default" in mod.r:
                lora[name] = (int(mod.r["default"]), float(mod.scaling["default"]), int(mod.in_features),
                              int(mod.out_features))
            elif isinstance(mod, ModulesToSaveWrapper):
                saved.append(name)
        msgs = sorted({str(w.message).splitlines()[0] for w in caught
                       if "fan_in_fan_out" not in str(w.message)})
        conn.send(("ok", lora, saved, msgs))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent as a typed error
        conn.send(("error", type(exc).__name__, str(exc)))
    finally:
        conn.close()


def meta_model(base_config):
    """The base architecture with no weights (device 'meta'): module names and types, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(base_config)


def peft_resolution(config: dict, base_config, where) -> Resolution:
    """Run PEFT's own target resolution in a forked child with a deadline (regexes cannot hang us)."""
    import multiprocessing as mp

    import torch

    peft_cfg = _peft_config(config, where)
    model = meta_model(base_config)
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    n_modules = sum(1 for _ in model.named_modules())
    deadline = PATTERN_DEADLINE_S + PATTERN_S_PER_MODULE * n_modules
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_resolve_in_child, args=(peft_cfg, model, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(deadline):
            raise AdapterConfigError(
                f"{where}: PEFT's target matching did not finish in {deadline:.0f} s: a regular expression in the "
                f"config backtracks catastrophically ({_pattern_list(config)}). Simplify the pattern(s)"
            )
        msg = parent.recv()
    except EOFError:
        msg = ("error", "crash", f"the matching process died (exit code {proc.exitcode})")
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        parent.close()
    if msg[0] == "error":
        kind, text = msg[1], msg[2]
        if "not found in the base model" in text or kind == "NoMatchingPeftModuleError":
            raise AdapterMismatchError(
                f"{where}: PEFT refuses this adapter for this base: {text.splitlines()[0]} "
                f"(the base's linear layers: {', '.join(sorted({n.rsplit('.', 1)[-1] for n in linear}))})")
        raise AdapterConfigError(f"{where}: PEFT refuses this config: {kind}: {text.splitlines()[0] if text else ''}")
    _, lora, saved, warnings = msg
    return Resolution(lora, saved, linear, warnings)


def _pattern_list(config: dict) -> str:
    pats = []
    for key in ("target_modules", "exclude_modules"):
        if isinstance(config.get(key), str):
            pats.append(f"{key} {config[key]!r}")
    for key in ("rank_pattern", "alpha_pattern"):
        pats += [f"{key} key {p!r}" for p in (config.get(key) or {})]
    return "; ".join(pats) or "layers_pattern / modules_to_save"
