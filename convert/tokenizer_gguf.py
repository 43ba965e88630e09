"""The tokenizer part of a GGUF: tokens, merges, token types, special ids, add_bos/eos, chat template
and `tokenizer.ggml.pre` (which pre-tokenizer llama.cpp applies).

Two sources behind one `TokenizerSpec`:
- a GGUF base: every `tokenizer.*` key is copied verbatim (it is already what llama.cpp expects);
- a HF tokenizer (byte-level BPE): built from tokenizer.json; `pre` is found the way llama.cpp's
  converter does it (sha256 of the token ids of its check text), using the table and check text
  of the pinned llama.cpp tree, so it follows the pin. Unknown tokenizers fall back to "default"
  and the fallback is reported (notes -> manifest and summary), never silent.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConversionError

# gguf TokenType values (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED = 1, 2, 3, 4, 5
PRE_FALLBACK = "default"


@dataclass
class TokenizerSpec:
    source: str                                 # "gguf" or "hf"
    kv: list[tuple[str, object, object, object]] = field(default_factory=list)  # (key, value, vtype, subtype)
    pre: str = ""
    n_tokens: int = 0
    notes: list[str] = field(default_factory=list)

    def add_to(self, writer) -> None:
        for key, value, vtype, sub in self.kv:
            writer.add_key_value(key, value, vtype, sub)

    def summary(self) -> dict:
        return {"source": self.source, "pre": self.pre, "n_tokens": self.n_tokens, "notes": self.notes}


def from_gguf(path: Path) -> TokenizerSpec:
    """Copy tokenizer.* keys from a GGUF file unchanged."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(path)
    spec = TokenizerSpec("gguf")
    for key, f in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == GGUFValueType.ARRAY else None
        value = f.contents()
        spec.kv.append((key, value, vtype, sub))
        if key == "tokenizer.ggml.pre":
            spec.pre = value
        if key == "tokenizer.ggml.tokens":
            spec.n_tokens = len(value)
    if spec.n_tokens == 0:
        raise ConversionError(f"{path} has no tokenizer.ggml.tokens; use a GGUF base that embeds its tokenizer")
    return spec


def _upstream_pre_table():
    """(check text, {hash: pre name}) from the pinned llama.cpp converter, or (None, {})."""
    try:
        from finllm_edge.native.fetch import llama_src_dir

        src = llama_src_dir(progress=False)
    except Exception:
        return None, {}
    for rel in ("conversion/base.py", "convert_hf_to_gguf.py"):
        p = src / rel
        if not p.exists():
            continue
        text = p.read_text(encoding="utf-8")
        m = re.search(r"^\s*chktxt = (.+)$", text, re.M)
        if not m:
            continue
        chktxt = ast.literal_eval(m.group(1))
        table = dict(re.findall(r'if chkhsh == "([0-9a-f]{64})":\s*\n(?:\s*#[^\n]*\n)*\s*res = "([^"]+)"', text))
        return chktxt, table
    return None, {}


def detect_pre(tokenizer) -> tuple[str, str | None]:
    """(pre name, note or None). The note explains a fallback."""
    chktxt, table = _upstream_pre_table()
    if chktxt is None:
        return PRE_FALLBACK, ("tokenizer.ggml.pre: the pinned llama.cpp tree is not available to identify the "
                              f"pre-tokenizer; fell back to {PRE_FALLBACK!r}. Run `finllm-edge native fetch`")
    digest = hashlib.sha256(str(tokenizer.encode(chktxt)).encode()).hexdigest()
    if digest in table:
        return table[digest], None
    return PRE_FALLBACK, (f"tokenizer.ggml.pre: unknown pre-tokenizer (hash {digest[:16]}...); fell back to "
                          f"{PRE_FALLBACK!r}. llama.cpp may split text differently from the HF tokenizer; "
                          "check the parity report")


def from_hf(tokenizer, vocab_size: int, folder: Path | None = None) -> TokenizerSpec:
    """Build the GGUF tokenizer keys from a HF byte-level BPE tokenizer."""
    from gguf import GGUFValueType as T

    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ConversionError("only fast (tokenizer.json) tokenizers are supported; save the tokenizer with "
                              "AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(base_dir)")
    tj = json.loads(backend.to_str())
    model = tj.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(tj.get("pre_tokenizer")):
        raise ConversionError(
            f"tokenizer model {model.get('type')!r} with pre-tokenizer {tj.get('pre_tokenizer', {}).get('type')!r} "
            "is not supported; this converter writes byte-level BPE (GPT-2 style) vocabularies only"
        )
    vocab = tokenizer.get_vocab()
    reverse = {i: t for t, i in vocab.items()}
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        tok = reverse[i]
        if i in added:
            looks_special = tok.startswith("<|") and tok.endswith("|>")
            types.append(CONTROL if added[i].get("special") or looks_special else USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(tok)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre, note = detect_pre(tokenizer)
    spec = TokenizerSpec("hf", pre=pre, n_tokens=len(tokens))
    if note:
        spec.notes.append(note)
    kv = spec.kv
    kv.append(("tokenizer.ggml.model", "gpt2", T.STRING, None))
    kv.append(("tokenizer.ggml.pre", pre, T.STRING, None))
    kv.append(("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING))
    kv.append(("tokenizer.ggml.token_type", types, T.ARRAY, T.INT32))
    kv.append(("tokenizer.ggml.merges", merges, T.ARRAY, T.STRING))
    for kind in ("bos", "eos", "unk", "pad"):
        tid = getattr(tokenizer, f"{kind}_token_id", None)
        key = {"unk": "unknown", "pad": "padding"}.get(kind, kind)
        if tid is not None and 0 <= tid < vocab_size:
            kv.append((f"tokenizer.ggml.{key}_token_id", int(tid), T.UINT32, None))
    probe = tokenizer("a")["input_ids"]
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    kv.append(("tokenizer.ggml.add_bos_token", bool(bos is not None and probe[:1] == [bos]), T.BOOL, None))
    kv.append(("tokenizer.ggml.add_eos_token", bool(eos is not None and probe[-1:] == [eos] and len(probe) > 1),
               T.BOOL, None))
    if getattr(tokenizer, "chat_template", None):
        tmpl = tokenizer.chat_template
        if isinstance(tmpl, dict):
            tmpl = tmpl.get("default") or next(iter(tmpl.values()))
        kv.append(("tokenizer.chat_template", str(tmpl), T.STRING, None))
    return spec
