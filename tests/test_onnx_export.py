"""ONNX export: builder output, checks after export, manifest entry, atomic writes, logits API."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from finllm_edge.errors import ConversionError, ModelNotFoundError, UnsupportedArchitectureError
from finllm_edge.profile import validate_profile
from finllm_edge_convert import onnx_checks, onnx_export
from finllm_edge_convert.onnx_export import export_onnx
from onnx_support import smollm2_hf_dir, tiny_hf_dir

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def tiny_llama():
    return tiny_hf_dir("llama")


@pytest.fixture(scope="module")
def int4_export(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "onnx-int4"
    return out, export_onnx(tiny_llama, out)


def test_int4_export_has_matmulnbits_4bit_block32_acc4(int4_export):
    import onnx

    out, entry = int4_export
    model = onnx.load(str(out / "model.onnx"), load_external_data=False)
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == 2 * 4 + 2 + 1  # per layer qkv, o, gate, up, down (qkv fused) + lm_head
    for n in nodes:
        attrs = {a.name: a.i for a in n.attribute}
        assert (attrs["bits"], attrs["block_size"], attrs["accuracy_level"]) == (4, 32, 4)
    assert not [n for n in model.graph.node if n.op_type == "MatMul"]
    assert entry["checks"]["structure"]["matmulnbits"] == len(nodes)
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json"} <= set(entry["files"])


def test_manifest_entry_hashes_sizes_versions(int4_export):
    out, entry = int4_export
    for name, meta in entry["files"].items():
        data = (out / name).read_bytes()
        assert meta["sha256"] == hashlib.sha256(data).hexdigest()
        assert meta["size_bytes"] == len(data)
    assert entry["model_sha256"] == entry["files"]["model.onnx"]["sha256"]
    # 4-bit weights + one f32 scale per 32 weights = 5 bits; norms in f32 add a little
    assert 4.9 < entry["bits_per_weight"] < 5.3
    assert entry["options"] == {"precision": "int4", "block_size": 32, "accuracy_level": 4, "symmetric": True,
                                "algo": "default", "lm_head_int8": False, "execution_provider": "cpu"}
    for pkg in ("onnx", "onnxruntime", "onnxruntime-genai"):
        assert entry["versions"][pkg]
    json.dumps(entry)  # manifest-ready


def test_checks_ran_after_export(int4_export):
    _, entry = int4_export
    parity = entry["checks"]["fp32_logits_parity"]
    assert parity["passed"] and parity["max_abs_diff"] <= parity["tolerance"]
    greedy = entry["checks"]["greedy_vs_hf_fp32"]
    assert greedy["n_tokens"] == onnx_export.GREEDY_TOKENS
    assert 0.0 <= greedy["teacher_forced_top1_pct"] <= 100.0


def test_no_temp_folder_left(int4_export):
    out, _ = int4_export
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_fp32_qwen2_export_matches_hf(tmp_path):
    hf = tiny_hf_dir("qwen2")
    entry = export_onnx(hf, tmp_path / "q", precision="fp32", checks=False)
    assert entry["checks"]["structure"]["matmulnbits"] == 0
    parity = onnx_checks.check_logits_parity(tmp_path / "q", hf)
    assert parity["passed"] and parity["top1_agreement"] == 1.0
    assert 31.9 < entry["bits_per_weight"] <= 32.0


def test_parity_check_catches_a_different_model(tmp_path, tiny_llama):
    export_onnx(tiny_llama, tmp_path / "a", precision="fp32", checks=False)
    with pytest.raises(ConversionError, match="differ from the HF model"):
        onnx_checks.check_logits_parity(tmp_path / "a", tiny_hf_dir("llama", seed=1))


def test_structure_check_catches_wrong_block_size(int4_export):
    out, _ = int4_export
    with pytest.raises(ConversionError, match="block_size"):
        onnx_checks.check_structure(out, bits=4, block_size=64, accuracy_level=4)
    with pytest.raises(ConversionError, match="expected a float model"):
        onnx_checks.check_structure(out, bits=None)


def test_failed_check_leaves_nothing(tmp_path, tiny_llama, monkeypatch):
    def boom(*a, **k):
        raise ConversionError("injected")

    monkeypatch.setattr(onnx_checks, "check_structure", boom)
    with pytest.raises(ConversionError, match="injected"):
        export_onnx(tiny_llama, tmp_path / "out", checks=False)
    assert list(tmp_path.iterdir()) == []


def test_input_errors(tmp_path, tiny_llama, int4_export):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        export_onnx(tmp_path, tmp_path / "o")
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg = json.loads((tiny_llama / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (bad / "config.json").write_text(json.dumps(cfg))
    (bad / "tokenizer.json").write_text("{}")
    with pytest.raises(UnsupportedArchitectureError, match="GPT2LMHeadModel"):
        export_onnx(bad, tmp_path / "o")
    with pytest.raises(ConversionError, match="already exists"):
        export_onnx(tiny_llama, int4_export[0])
    with pytest.raises(ConversionError, match="block_size"):
        export_onnx(tiny_llama, tmp_path / "o", block_size=48)
    # tiny_llama ties its embeddings, as SmolLM2 does: an int8 head is refused up front (the
    # builder would write a graph that fails onnx.checker), and nothing is written
    with pytest.raises(ConversionError, match="tied input/output embeddings"):
        export_onnx(tiny_llama, tmp_path / "o8", lm_head_int8=True)
    assert not (tmp_path / "o8").exists()


def test_onnx_logits_windows(tmp_path, tiny_llama):
    export_onnx(tiny_llama, tmp_path / "f", precision="fp32", checks=False)
    ids = onnx_checks.PARITY_TOKENS * 2
    full = onnx_checks.onnx_logits(tmp_path / "f", ids, window=len(ids))
    chunked = onnx_checks.onnx_logits(tmp_path / "f", ids, window=10)
    assert full.shape == chunked.shape == (len(ids), 49152)
    np.testing.assert_allclose(chunked[:10], full[:10], atol=1e-4)  # first window sees the same context
    assert np.abs(chunked[10:] - full[10:]).max() > 1e-3  # later windows restart from an empty cache
    ref = onnx_checks.hf_logits(tiny_llama, ids[10:20])  # window 2 = the HF model on those 10 tokens alone
    np.testing.assert_allclose(chunked[10:20], ref, atol=2e-3)


def test_greedy_agreement_with_supplied_tokens(int4_export):
    out, _ = int4_export
    prompt = onnx_checks.PARITY_TOKENS[:6]
    own = onnx_checks.onnx_greedy(out, prompt, 8)
    same = onnx_checks.greedy_agreement(out, prompt, own)
    assert same["identical_prefix"] == 8 and same["agreement_pct"] == 100.0
    assert same["teacher_forced_top1_pct"] == 100.0
    other = [(t + 1) % 49152 for t in own]
    diff = onnx_checks.greedy_agreement(out, prompt, other)
    assert diff["identical_prefix"] == 0 and diff["agreement_pct"] == 0.0


@pytest.mark.slow
def test_smollm2_int4_export_and_generate(tmp_path):
    from finllm_edge.onnx_engine import OnnxEngine

    hf = smollm2_hf_dir()
    entry = export_onnx(hf, tmp_path / "smol-int4")
    parity = entry["checks"]["fp32_logits_parity"]
    assert parity["passed"], parity
    assert entry["checks"]["greedy_vs_hf_fp32"]["teacher_forced_top1_pct"] >= 50.0
    assert 80e6 < entry["size_bytes"] < 95e6 and 4.9 < entry["bits_per_weight"] < 5.2
    with OnnxEngine(tmp_path / "smol-int4", n_threads=2) as eng:
        text = "".join(eng.generate("What is a bond? Answer:", max_tokens=24))
        profile = validate_profile(eng.last_profile)
    assert "bond" in text.lower()
    assert profile["model_type"] == "onnx-int4" and profile["n_gen"] == 24
    assert profile["model_sha256"] == entry["model_sha256"]
