"""`convert --awq --imatrix --bpw-budget` end to end on a tiny random Llama: every recipe is
written, lands in the quality report beside the plain artifacts, and the scaled model kept
for the ONNX export computes the same function as the merged one."""

from __future__ import annotations

import json

import pytest
import torch

from convert_helpers import make_adapter, make_tiny_base, smollm2_tokenizer_dir
from finllm_edge_convert.hf_loader import load_hf_model
from finllm_edge_convert.pipeline import ConvertOptions, convert

pytestmark = [pytest.mark.convert, pytest.mark.slow]


@pytest.fixture(scope="module")
def awq_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-awq")
    model = make_tiny_base(root / "base", "llama", smollm2_tokenizer_dir(), hidden=256)
    make_adapter(model, root / "lora")
    opts = ConvertOptions(base=root / "base", lora=root / "lora", out=root / "out", progress=False,
                          quants=["q4_0", "q4_k_m"], awq=True, awq_grid=4, imatrix=True, bpw_budget=7.0,
                          parity=False, cross_check=False, require_greedy=False, eval_chunks=2, task_passages=2,
                          formats=["gguf", "onnx"])
    return convert(opts)


def test_every_recipe_is_written_and_reported(awq_run):
    expected = {"f16", "q4_0", "q4_k_m", "imatrix-q4_0", "imatrix-q4_k_m", "awq-q4_0", "awq-q4_k_m",
                "awq-imatrix-q4_0", "awq-imatrix-q4_k_m", "awq-mixed-q4_0", "awq-mixed-q4_k_m", "onnx-int4"}
    assert set(awq_run.artifacts) == expected
    rows = {r["name"]: r for r in json.loads((awq_run.out / "quality.json").read_text())["artifacts"]}
    assert set(rows) == expected
    for name in expected - {"f16"}:
        assert rows[name]["mean_kld"] > 0, name       # compared against the unscaled F16 reference
    # no intermediates left behind
    assert not list(awq_run.out.glob(".work/awq-*-f16.gguf"))


def test_mixed_precision_stays_within_budget_and_spends_it(awq_run):
    a, plain = awq_run.artifacts["awq-mixed-q4_0"], awq_run.artifacts["awq-imatrix-q4_0"]
    assert plain["bits_per_weight"] < 7.0  # room to spend
    assert plain["bits_per_weight"] < a["bits_per_weight"] <= 7.0 + 1e-6

    def higher(types):
        return types.get("Q5_0", 0) + types.get("Q8_0", 0)

    assert higher(a["tensor_types"]) > higher(plain["tensor_types"])
    args = a["recipe"]["llama_quantize_args"]
    assert args.count("--tensor-type") >= 1 and all(x.startswith("^blk[.]") for x in args[1::2] if "=" in x)
    note = next(n for n in awq_run.notes if n.startswith("mixed precision q4_0"))
    assert "within 7.000 bits/weight" in note


def test_scaled_model_is_the_same_function(awq_run):
    merged = load_hf_model(awq_run.merged_dir)
    scaled_dir = awq_run.out / "merged-awq-q4_0"
    scaled = load_hf_model(scaled_dir)
    record = json.loads((scaled_dir / "awq.json").read_text())
    assert any(a > 0 for a in record["alphas"].values())
    ids = torch.arange(5, 69).reshape(1, -1)
    with torch.no_grad():
        a, b = merged(input_ids=ids).logits, scaled(input_ids=ids).logits
    # the scaled folder is float32 (the fold is exact there); the GGUF writer rounds once
    assert float((a - b).abs().max()) < 1e-3
    assert any(not torch.equal(p, q) for p, q in zip(merged.parameters(), scaled.parameters()))


def test_onnx_artifact_comes_from_the_awq_model_and_runs(awq_run, tmp_path):
    import subprocess
    import sys

    a = awq_run.artifacts["onnx-int4"]
    assert a["format"] == "onnx" and a["source"].endswith("merged-awq-q4_0")
    assert 4.0 < a["bits_per_weight"] < 9.0
    prof = tmp_path / "p.json"
    proc = subprocess.run([sys.executable, "-m", "finllm_edge.lab.cli", "run", a["dir"], "-p", "Revenue grew",
                           "--max-tokens", "4", "--no-chat", "--profile-out", str(prof)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    from finllm_edge.profile import validate_profile

    p = validate_profile(json.loads(prof.read_text()))
    assert p["model_type"] == "onnx-int4"


def test_manifest_lists_awq_outputs(awq_run):
    m = json.loads(awq_run.manifest.read_text())
    text = json.dumps(m)
    assert "model-awq-q4_0.gguf" in text and "model-awq-mixed-q4_k_m.gguf" in text
    assert "onnx-int4/model.onnx" in text
