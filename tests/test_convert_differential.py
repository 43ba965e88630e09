"""Differential check against the reference tools, on a foreign-style adapter (rank and alpha patterns, rsLoRA,
MLP targets) over tiny Llama and Qwen2 bases with a real (SmolLM2) vocabulary:

- merge: merged/model.safetensors equals PEFT's own merge_and_unload() (in float16), to the bit;
- GGUF: every tensor of model-f16.gguf equals upstream convert_hf_to_gguf.py's F16 conversion of PEFT's
  merged model, to the bit, and the tokenizer keys are the same (for Qwen2, upstream refuses the unknown
  pre-tokenizer hash; it is run with pre=qwen2 forced, the choice our gate makes by behaviour);
- quants: model-q4_0.gguf / model-q8_0.gguf hold the same tensor bytes as upstream llama-quantize of
  upstream's F16;
- tokenization: llama.cpp on our GGUF makes exactly the HF tokenizer's ids;
- greedy text: llama.cpp on our F16 GGUF continues a prompt exactly as PEFT's (unmerged) model in torch.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: E402  (the convert extra: scripts/bootstrap.sh installs it; never skipped)

from convert_helpers import make_adapter, make_tiny_base, smollm2_tokenizer_dir  # noqa: E402
from finllm_edge_convert import tokenizer_gguf as tg  # noqa: E402
from finllm_edge_convert.pipeline import ConvertOptions, convert  # noqa: E402
from finllm_edge_convert.tools import run_tool, upstream_tool  # noqa: E402

pytestmark = [pytest.mark.convert, pytest.mark.slow]
EVAL = Path(__file__).resolve().parent.parent / "convert" / "data" / "finance_heldout.txt"
FOREIGN = dict(targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), r=4, alpha=16,
               use_rslora=True, rank_pattern={"down_proj": 2, r"layers\.1\.self_attn\.q_proj": 8},
               alpha_pattern={"up_proj": 3, "v_proj": 24})
PROMPT = "Quarterly report. Revenue rose 8 percent year over year, and operating margin"

UPSTREAM = r"""
import runpy, sys
src, pre = sys.argv[1], sys.argv[2]
sys.argv = [src + "/convert_hf_to_gguf.py"] + sys.argv[3:]
sys.path[:0] = [src, src + "/gguf-py"]
if pre:
    import conversion.base as base
    for cls in vars(base).values():
        if isinstance(cls, type) and "get_vocab_base_pre" in vars(cls):
            cls.get_vocab_base_pre = lambda self, tokenizer: pre
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def upstream_convert(hf_dir: Path, out: Path, pre: str = "") -> Path:
    from finllm_edge.native.fetch import llama_src_dir

    src = llama_src_dir(progress=False)
    proc = subprocess.run([sys.executable, "-c", UPSTREAM, str(src), pre, str(hf_dir), "--outtype", "f16",
                           "--outfile", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def gguf_contents(path: Path):
    from gguf import GGUFReader

    r = GGUFReader(path)
    kv = {k: f.contents() for k, f in r.fields.items()}
    tensors = {t.name: (t.tensor_type.name, bytes(np.asarray(t.data).tobytes())) for t in r.tensors}
    return kv, tensors


def peft_model(model, lora: Path):
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PeftModel.from_pretrained(copy.deepcopy(model), lora).eval()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def runs(request, tmp_path_factory):
    arch = request.param
    root = tmp_path_factory.mktemp(f"diff-{arch}")
    model = make_tiny_base(root / "base", arch, smollm2_tokenizer_dir(), seed=11)
    make_adapter(model, root / "lora", seed=5, **FOREIGN)
    res = convert(ConvertOptions(base=root / "base", lora=root / "lora", out=root / "out", quants=["q8_0", "q4_0"],
                                 progress=False, cross_check=False, eval_chunks=1, eval_ctx=128,
                                 task_passages=1))
    # the reference: PEFT's merge, saved as a HF folder (float16, as merged/), converted by upstream
    merged = peft_model(model, root / "lora").merge_and_unload()
    merged.to(torch.float16).save_pretrained(root / "peft-merged", safe_serialization=True)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(root / "base").save_pretrained(root / "peft-merged")
    up = upstream_convert(root / "peft-merged", root / "upstream-f16.gguf", pre="qwen2" if arch == "qwen2" else "")
    return arch, root, model, res, up


def test_merge_equals_peft_to_the_bit(runs):
    from safetensors.torch import load_file

    arch, root, model, res, _ = runs
    ours = load_file(res.merged_dir / "model.safetensors")
    ref = load_file(root / "peft-merged" / "model.safetensors")
    assert set(ours) <= set(ref) and len(ours) >= len(ref) - 1          # a tied lm_head is not stored twice
    for name, t in ours.items():
        assert torch.equal(t, ref[name]), name
    assert any(not torch.equal(ours[n], model.state_dict()[n].half()) for n in ours if "down_proj" in n)


def test_f16_gguf_equals_upstream_conversion(runs):
    arch, root, _, res, up = runs
    kv, tensors = gguf_contents(Path(res.artifacts["f16"]["path"]))
    ukv, utensors = gguf_contents(up)
    assert set(tensors) == set(utensors)
    for name in tensors:
        assert tensors[name] == utensors[name], name                     # same type, same bytes
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        assert kv[key] == ukv[key], key
    assert kv["tokenizer.ggml.pre"] == {"llama": "smollm", "qwen2": "qwen2"}[arch]


def test_quants_hold_upstreams_bytes(runs):
    _, root, _, res, up = runs
    for q, upstream_type in (("q8_0", "Q8_0"), ("q4_0", "Q4_0")):
        ref = root / f"upstream-{q}.gguf"
        run_tool([upstream_tool("llama-quantize"), up, ref, upstream_type, "2"], "llama-quantize")
        _, ours = gguf_contents(Path(res.artifacts[q]["path"]))
        _, theirs = gguf_contents(ref)
        assert ours == theirs, q


def test_tokenization_identical_to_hf(runs):
    from transformers import AutoTokenizer

    from finllm_edge_convert.llama_eval import gguf_tokenize

    _, root, _, res, _ = runs
    tok = AutoTokenizer.from_pretrained(res.merged_dir)
    texts = list(tg.CHECK_TEXTS[:10]) + [EVAL.read_text(), PROMPT]
    assert gguf_tokenize(Path(res.artifacts["f16"]["path"]), texts) == [tok(t)["input_ids"] for t in texts]
    assert res.parity["tokens_identical"]


def test_greedy_text_identical_to_peft(runs):
    from transformers import AutoTokenizer

    from finllm_edge_convert.llama_eval import LlamaLogits

    _, root, model, res, _ = runs
    tok = AutoTokenizer.from_pretrained(res.merged_dir)
    ids = tok(PROMPT)["input_ids"]
    pm = peft_model(model, root / "lora")
    with torch.no_grad():
        out = pm.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          max_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id)
    want = out[0, len(ids):].tolist()
    with LlamaLogits(Path(res.artifacts["f16"]["path"]), n_ctx=128) as ll:
        assert ll.tokenize(PROMPT) == ids
        got = ll.greedy(ids, 16)
    assert got == want and tok.decode(got) == tok.decode(want)
