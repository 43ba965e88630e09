"""The base model, from a Hugging Face folder or a GGUF file, behind one `TensorSource`.

HF folder: config.json + *.safetensors (sharded or not). Tensors are memory-mapped with
safetensors and read one at a time, so the merge never holds a second copy of the model.

GGUF base (e.g. the embedded SmolLM2-135M-Instruct.Q4_1.gguf): transformers dequantizes it
(`from_pretrained(dir, gguf_file=...)`); we build a fresh model from the config, load the
state dict into it and serve its tensors. The tokenizer metadata is copied from the GGUF as is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol

from .errors import CorruptModelError, InputNotFoundError


class TensorSource(Protocol):
    def names(self) -> list[str]: ...
    def shape(self, name: str) -> tuple[int, ...]: ...
    def get(self, name: str): ...  # torch.Tensor


class SafetensorsSource:
    """Memory-mapped tensors from one or more .safetensors files."""

    def __init__(self, files: list[Path]):
        from safetensors import safe_open

        self._where: dict[str, object] = {}
        self._handles = []
        for f in files:
            try:
                h = safe_open(str(f), framework="pt")
            except Exception as exc:  # safetensors raises its own error types
                raise CorruptModelError(
                    f"{f} is not a readable safetensors file ({exc}); re-download or re-save the model"
                ) from exc
            self._handles.append(h)
            for k in h.keys():
                self._where[k] = h

    def names(self) -> list[str]:
        return list(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._where[name].get_slice(name).get_shape())

    def dtype(self, name: str) -> str:
        return str(self._where[name].get_slice(name).get_dtype())

    def get(self, name: str):
        return self._where[name].get_tensor(name)


class StateDictSource:
    """Tensors already in memory (a GGUF base dequantized by transformers)."""

    def __init__(self, state_dict: dict):
        self._sd = state_dict

    def names(self) -> list[str]:
        return list(self._sd)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._sd[name].shape)

    def dtype(self, name: str) -> str:
        return str(self._sd[name].dtype).replace("torch.", "")

    def get(self, name: str):
        return self._sd[name]


@dataclass
class BaseModel:
    kind: str                      # "hf" or "gguf"
    path: Path                     # the folder (hf) or the .gguf file
    config: object                 # transformers PretrainedConfig
    files: list[Path]              # every input file (hashed into the manifest)
    _tensors: TensorSource | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return getattr(self.config, "_name_or_path", "") or self.path.stem

    @property
    def tensors(self) -> TensorSource:
        if self._tensors is None:
            self._tensors = _load_tensors(self)
        return self._tensors

    def iter_tensors(self) -> Iterator[tuple[str, object]]:
        for n in self.tensors.names():
            yield n, self.tensors.get(n)

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        if self.kind == "gguf":
            return AutoTokenizer.from_pretrained(self.path.parent, gguf_file=self.path.name)
        return AutoTokenizer.from_pretrained(self.path)


def _safetensor_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as exc:
            raise CorruptModelError(f"{index} is not a valid safetensors index ({exc}); re-download it") from exc
        files = [folder / n for n in names]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise InputNotFoundError(
                f"{folder}: shards listed in {index.name} are missing: {', '.join(missing)}; download them"
            )
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InputNotFoundError(
            f"{folder} has no *.safetensors weights; convert .bin checkpoints with "
            "`model.save_pretrained(dir, safe_serialization=True)` first"
        )
    return files


def resolve_base(path: Path) -> tuple[str, Path]:
    """('hf', folder) or ('gguf', file) for a user-given --base, or InputNotFoundError."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputNotFoundError(f"base model {path} does not exist; pass --base DIR (HF folder) or FILE.gguf")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise InputNotFoundError(f"base model {path} is a file but not .gguf; pass a HF folder or a .gguf file")
        return "gguf", path
    if (path / "config.json").exists():
        return "hf", path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return "gguf", ggufs[0]
    raise InputNotFoundError(
        f"{path} has no config.json (and not exactly one .gguf file); a HF base folder needs "
        "config.json + *.safetensors + tokenizer files"
    )


def load_base(path: Path) -> BaseModel:
    """Open the base model cheaply: config and file list now, tensors on first use."""
    from transformers import AutoConfig

    kind, p = resolve_base(path)
    if kind == "gguf":
        try:
            config = AutoConfig.from_pretrained(p.parent, gguf_file=p.name)
        except Exception as exc:
            raise CorruptModelError(f"{p} could not be read as a GGUF model ({exc}); re-download it") from exc
        return BaseModel("gguf", p, config, [p])
    try:
        config = AutoConfig.from_pretrained(p)
    except Exception as exc:
        raise CorruptModelError(f"{p / 'config.json'} could not be parsed ({exc}); fix or re-download it") from exc
    files = _safetensor_files(p)
    extra = [p / n for n in ("config.json", "tokenizer.json", "tokenizer_config.json",
                             "special_tokens_map.json", "generation_config.json") if (p / n).exists()]
    return BaseModel("hf", p, config, extra + files)


def _load_tensors(base: BaseModel) -> TensorSource:
    if base.kind == "hf":
        return SafetensorsSource([f for f in base.files if f.suffix == ".safetensors"])
    import torch
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(base.path.parent, gguf_file=base.path.name, dtype=torch.float32)
    fresh = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    del loaded
    sd = {k: v.detach() for k, v in fresh.state_dict().items()}
    if getattr(base.config, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)
    return StateDictSource(sd)


def load_hf_model(folder: Path, dtype=None):
    """A transformers CausalLM from a HF folder (the merged model), in eval mode, float32 by default."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
    model.eval()
    return model


def build_model_from_base(base: BaseModel, dtype=None):
    """A fresh transformers model with the base weights (used by training and PEFT checks)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(base.config, dtype=dtype or torch.float32)
    sd = {n: base.tensors.get(n).to(dtype or torch.float32) for n in base.tensors.names()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not (m == "lm_head.weight" and base.config.tie_word_embeddings)]
    if missing or unexpected:
        raise CorruptModelError(
            f"{base.path}: weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    if getattr(base.config, "tie_word_embeddings", False):
        model.tie_weights()
    model.eval()
    return model
