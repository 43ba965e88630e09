"""Tokenizer fidelity is a gate: llama.cpp must make exactly the HF tokenizer's token ids, on a varied text set
plus the user's texts. An unknown pre-tokenizer hash is resolved by behaviour (every pre-tokenizer the pinned
llama.cpp knows is tried); a tokenizer none of them reproduces, or a wrong --pre-tokenizer, fails clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch  # noqa: E402,F401  (the convert extra: scripts/bootstrap.sh installs it; never skipped)

from convert_helpers import make_adapter, make_tiny_base, smollm2_tokenizer_dir  # noqa: E402
from finllm_edge_convert import tokenizer_gguf as tg  # noqa: E402
from finllm_edge_convert.architectures import get_arch  # noqa: E402
from finllm_edge_convert.errors import TokenizerMismatchError  # noqa: E402
from finllm_edge_convert.hf_loader import load_base  # noqa: E402

pytestmark = [pytest.mark.convert, pytest.mark.slow]
EVAL = Path(__file__).resolve().parent.parent / "convert" / "data" / "finance_heldout.txt"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def tokenizer_dir_with(tmp: Path, pre_tokenizer: dict) -> Path:
    """The SmolLM2 vocabulary and merges under another pre-tokenizer (tokenizer.json edited)."""
    import shutil

    d = tmp / "tok"
    shutil.copytree(smollm2_tokenizer_dir(), d)
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = pre_tokenizer
    (d / "tokenizer.json").write_text(json.dumps(tj))
    return d


def split_then_bytes(regex: str) -> dict:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}


def gate_for(folder: Path, **kw):
    base = load_base(folder)
    tok = base.load_tokenizer()
    spec = tg.from_hf(tok, int(base.config.vocab_size))
    fid = tg.gate(tok, spec, get_arch(base.config), base.config, {"--eval text": EVAL.read_text()},
                  prefer=(base.config.model_type,) + tg.PREFER, **kw)
    return fid, spec, tok, base


def llama_ids(base, spec, texts, tmp: Path):
    from finllm_edge_convert.llama_eval import gguf_tokenize

    path = tg.write_vocab_gguf(tmp / "check.gguf", get_arch(base.config), base.config, spec, spec.pre)
    return gguf_tokenize(path, texts)


MORE = ["FY2025 guidance: 1234567 units, 98.6% uptime; 'TIS THE SEASON'S BEST — ¿Qué tal? 株価は3%上昇 🎉🎉",
        "  leading spaces\n\n\n\tand tabs, 2,500,000.00 USD; 0.5bp; x10; 100% / 3 = 33.3%"]


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok-qwen2")
    make_tiny_base(root / "base", "qwen2", smollm2_tokenizer_dir())
    return root / "base"


def test_qwen2_unknown_hash_is_mapped_by_behaviour(qwen2_dir, tmp_path):
    fid, spec, tok, base = gate_for(qwen2_dir)
    assert spec.pre == "qwen2" and fid.how == "behaviour" and "qwen2" in fid.matching
    assert "default" not in fid.matching                   # the old silent fallback splits differently
    texts = MORE + [EVAL.read_text()]
    assert llama_ids(base, spec, texts, tmp_path) == [tok(t)["input_ids"] for t in texts]   # held-out texts too


def test_llama_with_an_unknown_hash_tokenizer_is_mapped_by_behaviour(tmp_path):
    tokdir = tokenizer_dir_with(tmp_path, split_then_bytes(LLAMA3_REGEX))
    model = make_tiny_base(tmp_path / "base", "llama", tokdir)
    assert model is not None
    fid, spec, tok, base = gate_for(tmp_path / "base")
    _, note = tg.detect_pre(tok)
    assert note and "unknown pre-tokenizer" in note                  # the hash is not in llama.cpp's table
    assert fid.how == "behaviour" and spec.pre == "llama3"           # Llama-3's regex, found by behaviour
    texts = MORE + [EVAL.read_text()]
    assert llama_ids(base, spec, texts, tmp_path) == [tok(t)["input_ids"] for t in texts]


def test_tokenizer_no_known_pre_tokenizer_reproduces_fails(tmp_path):
    tokdir = tokenizer_dir_with(tmp_path, split_then_bytes(r"[aeiou]|\p{N}{2}"))   # nobody splits like this
    make_tiny_base(tmp_path / "base", "llama", tokdir)
    with pytest.raises(TokenizerMismatchError, match=r"from token \d+: HF \[.*vs llama.cpp.*Known pre-tokenizers "
                                                     r"that reproduce HF exactly on the check texts: none"):
        gate_for(tmp_path / "base")


def test_convert_fails_on_it_before_writing_anything(tmp_path, capsys):
    from finllm_edge.lab.cli import main

    tokdir = tokenizer_dir_with(tmp_path, split_then_bytes(r"[aeiou]|\p{N}{2}"))
    model = make_tiny_base(tmp_path / "base", "llama", tokdir)
    make_adapter(model, tmp_path / "lora")
    rc = main(["convert", "--base", str(tmp_path / "base"), "--lora", str(tmp_path / "lora"), "--out",
               str(tmp_path / "out"), "--no-progress", "--pre-tokenizer", "gpt-2"])
    err = capsys.readouterr().err
    assert rc != 0 and "tokenizer fidelity: with --pre-tokenizer 'gpt-2'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_override_is_still_gated(qwen2_dir):
    fid, spec, _, _ = gate_for(qwen2_dir, override="qwen2")
    assert fid.how == "override" and spec.pre == "qwen2"
    with pytest.raises(TokenizerMismatchError, match=r"--pre-tokenizer 'gpt-2'.*reproduce HF exactly.*qwen2.*"
                                                     r"rerun with --pre-tokenizer"):
        gate_for(qwen2_dir, override="gpt-2")
    with pytest.raises(TokenizerMismatchError, match="not a pre-tokenizer the pinned llama.cpp knows"):
        gate_for(qwen2_dir, override="no-such-pre")


def test_known_pre_tokenizers_follow_the_pin():
    groups = tg.known_pre_tokenizers()
    names = {n for g in groups for n in g}
    assert {"default", "gpt-2", "llama-bpe", "qwen2", "smollm"} <= names and len(groups) > 30
    assert next(g for g in groups if "qwen2" in g)[:2] == ("qwen2", "deepseek-r1-qwen")


def test_gguf_base_tokenizer_is_repaired_to_match_the_gguf():
    """transformers rebuilds SmolLM2's tokenizer from the GGUF with GPT-2's regex (no digit splitting): the
    gate sees it, repairs the HF side (saved into merged/) and keeps the GGUF's own 'smollm'."""
    from transformers import AutoTokenizer

    from finllm_edge.models import default_model_path

    p = default_model_path()
    tok = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)
    base = load_base(p)
    spec = tg.from_gguf(p)
    broken = tok("a ½ b ² c")["input_ids"]
    fid = tg.gate(tok, spec, get_arch(base.config), base.config, {"--eval text": EVAL.read_text()})
    assert fid.how == "gguf" and spec.pre == "smollm"
    assert any("repaired" in n for n in spec.notes)
    assert tok("a ½ b ² c")["input_ids"] != broken
