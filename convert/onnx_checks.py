"""Checks of an exported ONNX folder against its Hugging Face source, and logits for the quality report.

- `check_structure`: onnx.checker on the model path (external data included) plus the expected
  4-bit MatMulNBits settings (bits, block_size, accuracy_level) on every quantized MatMul.
- `check_logits_parity`: fp32 ONNX logits vs the HF model on fixed tokens. Tolerance (stated here,
  recorded in the manifest): max |diff| <= FP32_ATOL + FP32_RTOL * max|logit|, and identical top-1.
- `greedy_agreement`: greedy continuation of an ONNX model (run by onnxruntime-genai, the runtime the
  app uses) against reference tokens: the HF fp32 model's greedy tokens, or the GGUF Q4 artifact's
  greedy tokens supplied by the caller.
- `onnx_logits(model_dir, token_ids, window)`: teacher-forced per-position logits for quality.py.

ONNX forwards here use onnxruntime directly with an empty KV cache (past length 0), so a window is
one prefill; no state carries over between windows.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from finllm_edge.errors import ConversionError
from finllm_edge.onnx_validate import validate_model_dir

FP32_ATOL = 1e-3  # absolute slack on fp32 logits (fused GQA/RMSNorm kernels reorder sums)
FP32_RTOL = 1e-4  # ... plus this fraction of the largest |logit|
# Fixed token ids for parity: in-vocabulary for any tokenizer with >= 1000 entries.
PARITY_TOKENS = [1, 504, 3458, 282, 260, 2193, 314, 253, 4117, 30, 378, 3622, 284, 5064, 359, 701]


def check_structure(model_dir, bits: int | None = 4, block_size: int | None = 32,
                    accuracy_level: int | None = 4, lm_head_bits: int | None = None) -> dict:
    """Validate the folder (onnx.checker by path, external data vetted) and the MatMulNBits settings.

    For a float export pass bits=None: then no MatMulNBits may be present. `lm_head_bits` (default:
    `bits`) is what the lm_head MatMulNBits must have (8 when it is kept at int8).
    """
    info = validate_model_dir(model_dir)
    nodes = info.quant_nodes
    if bits is None:
        if nodes:
            raise ConversionError(f"{model_dir}: expected a float model, found {len(nodes)} MatMulNBits nodes")
        return {"onnx_checker": "passed", "matmulnbits": 0, "op_counts": info.op_counts}
    if not nodes:
        raise ConversionError(f"{model_dir}: no MatMulNBits nodes; the export did not quantize the MatMuls")
    if "MatMul" in info.op_counts:
        raise ConversionError(f"{model_dir}: {info.op_counts['MatMul']} MatMul nodes were left unquantized")
    want = {"bits": bits, "block_size": block_size, "accuracy_level": accuracy_level}
    for node in nodes:
        expect = dict(want, bits=lm_head_bits or bits) if "lm_head" in node["name"] else want
        bad = {k: node.get(k) for k, v in expect.items() if v is not None and node.get(k) != v}
        if bad:
            raise ConversionError(f"{model_dir}: MatMulNBits {node['name']} has {bad}, expected {want}")
    return {"onnx_checker": "passed", "matmulnbits": len(nodes), **want, "lm_head_bits": lm_head_bits or bits,
            "op_counts": info.op_counts}


class OnnxForward:
    """One onnxruntime session over a genai-builder model; `logits(ids)` runs one prefill."""

    def __init__(self, model_dir, n_threads: int | None = None):
        import onnxruntime as ort

        info = validate_model_dir(model_dir)
        dec = info.genai_config["model"]["decoder"]
        self.n_layers = dec["num_hidden_layers"]
        self.kv_heads = dec["num_key_value_heads"]
        self.head_size = dec["head_size"]
        self.names = dec["inputs"]
        opts = ort.SessionOptions()
        if n_threads:
            opts.intra_op_num_threads = n_threads
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(info.model_path), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        kv_type = self.inputs[self.names["past_key_names"] % 0].type
        self.kv_dtype = np.float16 if "float16" in kv_type else np.float32

    def logits(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        feeds = {self.names["input_ids"]: ids,
                 self.names["attention_mask"]: np.ones_like(ids)}
        if "position_ids" in self.inputs:
            feeds["position_ids"] = np.arange(ids.shape[1], dtype=np.int64).reshape(1, -1)
        empty = np.zeros((1, self.kv_heads, 0, self.head_size), dtype=self.kv_dtype)
        for i in range(self.n_layers):
            feeds[self.names["past_key_names"] % i] = empty
            feeds[self.names["past_value_names"] % i] = empty
        out = self.session.run(["logits"], feeds)[0]
        return out[0].astype(np.float32)


def onnx_logits(model_dir, token_ids, window: int = 512, n_threads: int | None = None) -> np.ndarray:
    """Teacher-forced logits of an ONNX model, shape [len(token_ids), vocab], float32.

    The ids are cut into consecutive, non-overlapping windows of `window` tokens (the last may be
    shorter); each window is one forward from an empty cache, as llama-perplexity does with its
    chunks. Row i holds the logits predicting token_ids[i + 1] given the tokens of its window up to
    and including i. Memory is len(token_ids) * vocab * 4 bytes (SmolLM2: 192 KiB per token).
    """
    token_ids = list(token_ids)
    if window < 1:
        raise ValueError("window must be >= 1")
    fwd = OnnxForward(model_dir, n_threads)
    rows = [fwd.logits(token_ids[s:s + window]) for s in range(0, len(token_ids), window)]
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, 0), np.float32)


def hf_logits(hf_dir, token_ids) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model(torch.tensor([list(token_ids)], dtype=torch.long)).logits[0]
    return out.float().numpy()


def hf_greedy(hf_dir, prompt_ids, n: int) -> list[int]:
    """Greedy continuation by the HF model in fp32 (stops early only at EOS)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([list(prompt_ids)]), max_new_tokens=n, do_sample=False,
                             attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long))
    return out[0, len(prompt_ids):].tolist()


def check_logits_parity(onnx_dir, hf_dir, token_ids=PARITY_TOKENS, atol: float = FP32_ATOL,
                        rtol: float = FP32_RTOL, raise_on_fail: bool = True) -> dict:
    """fp32 ONNX vs HF logits on `token_ids`; raise ConversionError beyond the stated tolerance."""
    ref = hf_logits(hf_dir, token_ids)
    got = onnx_logits(onnx_dir, token_ids, window=len(token_ids))
    if got.shape != ref.shape:
        raise ConversionError(f"ONNX logits shape {got.shape} != HF {ref.shape}")
    diff = np.abs(got - ref)
    limit = atol + rtol * float(np.abs(ref).max())
    result = {
        "n_tokens": len(token_ids),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "tolerance": limit,
        "tolerance_rule": f"max|diff| <= {atol} + {rtol} * max|logit|, same top-1 at every position",
        "top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).mean()),
    }
    result["passed"] = result["max_abs_diff"] <= limit and result["top1_agreement"] == 1.0
    if raise_on_fail and not result["passed"]:
        raise ConversionError(
            f"fp32 ONNX logits differ from the HF model: max |diff| {result['max_abs_diff']:.3g} "
            f"(allowed {limit:.3g}), top-1 agreement {result['top1_agreement']:.1%}; the export is wrong "
            "for this architecture, report it with the model's config.json"
        )
    return result


def onnx_greedy(model_dir, prompt_ids, n: int, n_threads: int | None = None) -> list[int]:
    """Greedy continuation by onnxruntime-genai (stops early only at EOS)."""
    import onnxruntime_genai as og

    validate_model_dir(model_dir)
    config = og.Config(str(model_dir))
    if n_threads:
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": n_threads}}}}))
    model = og.Model(config)
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt_ids) + n)
    gen = og.Generator(model, params)
    gen.append_tokens(list(prompt_ids))
    out: list[int] = []
    while len(out) < n and not gen.is_done():
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
    del gen, params, model
    return out


def greedy_agreement(model_dir, prompt_ids, reference: list[int], n_threads: int | None = None) -> dict:
    """Compare the ONNX model's greedy continuation of `prompt_ids` with `reference` tokens.

    `reference` is the HF model's greedy output or the GGUF Q4 artifact's (the caller runs llama.cpp).
    Reports the identical prefix, position-wise agreement of the free-running continuations, and
    teacher-forced top-1 agreement along the reference (robust to one early divergence).
    """
    reference = [int(t) for t in reference]
    got = onnx_greedy(model_dir, prompt_ids, len(reference), n_threads)
    prefix = 0
    for a, b in zip(got, reference):
        if a != b:
            break
        prefix += 1
    n = len(reference)
    positional = sum(a == b for a, b in zip(got, reference)) / n if n else 1.0
    seq = list(prompt_ids) + reference
    logits = onnx_logits(model_dir, seq[:-1], window=len(seq), n_threads=n_threads)
    preds = logits[len(prompt_ids) - 1:].argmax(-1)
    forced = float((preds == np.asarray(reference)).mean()) if n else 1.0
    return {
        "n_tokens": n, "onnx_tokens": got, "reference_tokens": reference,
        "identical_prefix": prefix, "agreement_pct": 100.0 * positional,
        "teacher_forced_top1_pct": 100.0 * forced,
    }


def write_json(path, data) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
