"""The embedded demo: SmolLM2-135M-Instruct + the shipped finance adapter, converted once for this module."""

from __future__ import annotations

import json
import subprocess

import pytest

from finllm_edge_convert.pipeline import ConvertOptions, convert  # noqa: E402
from finllm_edge_convert.tools import upstream_tool  # noqa: E402

pytestmark = [pytest.mark.convert, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    # defaults: SmolLM2 (a GGUF base) + shipped adapter, q8_0/q4_0/q4_k_m; plus the ONNX int4 folder
    return convert(ConvertOptions(out=out, progress=False, formats=["gguf", "onnx"]))


def test_parity_logits_and_16_greedy_tokens(demo):
    p = demo.parity
    assert p["passed"] and p["greedy_tokens"] == 16 and p["greedy_identical"]
    assert p["max_abs_logit_diff"] <= 0.25 and p["mean_kld"] <= 1e-3 and p["top1_agreement"] == 1.0


def test_all_artifacts_load_and_generate_in_upstream_llama_simple(demo):
    tool = upstream_tool("llama-simple")
    for name in ("f16", "q8_0", "q4_0", "q4_k_m"):
        proc = subprocess.run([str(tool), "-m", demo.artifacts[name]["path"], "-n", "8",
                               "The debt service coverage ratio"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (name, proc.stderr[-1500:])
        assert "The debt service coverage ratio" in proc.stdout and len(proc.stdout.strip()) > 40


def test_quality_agrees_with_upstream_llama_perplexity(demo):
    rows = {r["name"]: r for r in demo.quality}
    for name in ("q8_0", "q4_0", "q4_k_m"):
        up = rows[name]["upstream"]
        assert up["rel_diff_ppl_ratio"] <= 0.05 and up["rel_diff_mean_kld"] <= 0.05, (name, up)
    assert rows["q8_0"]["mean_kld"] < rows["q4_k_m"]["mean_kld"] < rows["q4_0"]["mean_kld"]
    assert rows["q8_0"]["top1_agreement"] > 0.9


def test_onnx_int4_from_a_gguf_base_in_the_report_and_manifest(demo):
    """The merged folder of a GGUF base names its architecture, so the ONNX export runs; the int4
    folder is scored in the same report and listed in the manifest with hashes."""
    rows = {r["name"]: r for r in demo.quality}
    onnx = rows["onnx-int4"]
    assert 1.0 < onnx["ppl_ratio"] < 2.0 and 0.5 < onnx["top1_agreement"] < rows["q8_0"]["top1_agreement"]
    art = demo.artifacts["onnx-int4"]
    assert art["format"] == "onnx" and 4.0 < art["bits_per_weight"] < 5.5
    m = json.loads(demo.manifest.read_text())
    entry = next(a for a in m["artifacts"] if a.get("format") == "onnx")
    assert entry["path"] == "onnx-int4/model.onnx" and len(entry["sha256"]) == 64
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json"} <= set(entry["files"])
    assert all(len(f["sha256"]) == 64 and f["size_bytes"] > 0 for f in entry["files"].values())


def test_adapter_lowers_heldout_perplexity(demo):
    meta = demo.quality_meta
    assert meta["merged_f16_ppl"] < 0.9 * meta["base_model_ppl"]


def test_q4_k_m_fallbacks_are_reported(demo):
    types = demo.artifacts["q4_k_m"]["tensor_types"]
    # hidden 576 is not a multiple of 256: most k-quant candidates fall back to Q5_0 / Q8_0
    assert types.get("Q4_K", 0) > 0 and types.get("Q5_0", 0) > 0
    q = json.loads((demo.out / "quality.json").read_text())
    assert next(a for a in q["artifacts"] if a["name"] == "q4_k_m")["tensor_types"] == types


def test_manifest_and_tokenizer_from_gguf_base(demo):
    m = json.loads(demo.manifest.read_text())
    assert m["inputs"]["base"][0]["path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert m["options"]["tokenizer"]["source"] == "gguf" and m["options"]["tokenizer"]["pre"] == "smollm"
    assert (demo.merged_dir / "model.safetensors").exists() and (demo.merged_dir / "tokenizer.json").exists()


def test_hf_tokenizer_path_matches_the_gguf_tokenizer():
    """The HF-folder tokenizer writer yields the same vocab as the GGUF that llama.cpp's converter made."""
    from transformers import AutoTokenizer

    from convert_helpers import smollm2_tokenizer_dir
    from finllm_edge.models import default_model_path
    from finllm_edge_convert import tokenizer_gguf

    ref = {k: v for k, v, _, _ in tokenizer_gguf.from_gguf(default_model_path()).kv}
    ours = tokenizer_gguf.from_hf(AutoTokenizer.from_pretrained(smollm2_tokenizer_dir()), 49152)
    got = {k: v for k, v, _, _ in ours.kv}
    assert ours.pre == "smollm" and not ours.notes
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token"):
        assert got[key] == ref[key], key
