"""`convert --adapter-gguf`: the adapter as a GGUF LoRA + the unmerged base, and the runtime result
equal to the merged model on F16.

Tiny random Llama/Qwen2 bases with PEFT adapters that use rank/alpha patterns, rsLoRA and MLP
targets (the merge's own test variants). Checked:
- the F16 base + the adapter at run time gives the merged F16 model's logits within fp16 rounding
  (llama.cpp logits, the quality row 'base-f16+adapter' against the merged reference) and the same
  greedy tokens through the core (Engine.load_adapter);
- the adapter file follows llama.cpp's conventions (general.type, adapter.type, alpha 0 with the
  scaling folded into lora_b, lora_a [n_in, r] / lora_b [r, n_out]);
- the combinations a runtime LoRA cannot express are refused with the reason, before --out is touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convert_helpers import make_adapter, make_tiny_base, smollm2_tokenizer_dir  # noqa: E402
from finllm_edge_convert.errors import UnsupportedAdapterError  # noqa: E402
from finllm_edge_convert.pipeline import ConvertOptions, convert  # noqa: E402

pytestmark = [pytest.mark.convert, pytest.mark.slow]

CASES = {
    "llama-patterns": ("llama", {"rank_pattern": {"v_proj": 2, "layers.1.self_attn.q_proj": 6},
                                 "alpha_pattern": {"o_proj": 3, "k_proj": 32}}),
    "llama-rslora-mlp": ("llama", {"use_rslora": True,
                                   "targets": ("gate_proj", "up_proj", "down_proj", "q_proj", "k_proj")}),
    "qwen2-mlp": ("qwen2", {"targets": ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")}),
}


def _convert(root: Path, arch: str, kw: dict, **opts):
    kw = dict(kw)
    targets = kw.pop("targets", ("q_proj", "k_proj", "v_proj", "o_proj"))
    model = make_tiny_base(root / "base", arch, smollm2_tokenizer_dir())
    make_adapter(model, root / "lora", targets=targets, **kw)
    o = ConvertOptions(base=root / "base", lora=root / "lora", out=root / "out", progress=False, require_greedy=False,
                       cross_check=False, eval_chunks=2, task=False, parity=False, adapter_gguf=True, **opts)
    return convert(o)


@pytest.fixture(scope="module", params=list(CASES))
def run(request, tmp_path_factory):
    arch, kw = CASES[request.param]
    quants = ["q8_0"] if request.param == "llama-patterns" else []
    return request.param, _convert(tmp_path_factory.mktemp(request.param), arch, kw, quants=quants)


def _logits(out: Path, tokens: list[int], n_ctx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """llama.cpp logits of the merged F16 model, the F16 base, and the base with the adapter at run time."""
    from finllm_edge_convert.llama_eval import LlamaLogits

    got = []
    for model, adapter in (("model-f16.gguf", None), ("base-f16.gguf", None), ("base-f16.gguf", "adapter-f16.gguf")):
        with LlamaLogits(out / model, n_ctx=n_ctx, adapter=out / adapter if adapter else None) as m:
            got.append(m.logits(tokens))
    return got[0], got[1], got[2]


def test_runtime_adapter_equals_merged_on_f16(run):
    name, res = run
    out = res.out
    rng = np.random.default_rng(0)
    tokens = [1] + [int(t) for t in rng.integers(10, 5000, size=63)]
    merged, base, runtime = _logits(out, tokens, 128)
    effect = np.abs(merged - base).max()
    err = np.abs(merged - runtime).max()
    assert effect > 0.05, f"{name}: the adapter barely changes the model ({effect})"
    # fp16 rounding differs (merged weights vs fp16 factors); the tiny adapters here are extreme (deltas of
    # ~10 logits), so the bound is relative, plus the distributions (mean KLD) as convert's parity check does
    assert err < 0.06 * effect + 2e-3, f"{name}: runtime adapter vs merged model: {err} (effect {effect})"
    lm, lr = (x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) - x.max(-1, keepdims=True)
              for x in (merged.astype(np.float64), runtime.astype(np.float64)))
    assert float((np.exp(lm) * (lm - lr)).sum(-1).mean()) < 1e-3
    row = next(r for r in res.quality if r["name"] == "base-f16+adapter")
    assert row["mean_kld"] < 5e-3 and row["top1_agreement"] >= 0.95, row   # shipped adapter on SmolLM2: 0.00000 / 99.8%


def test_core_greedy_tokens_equal_merged(run):
    from finllm_edge.engine import Engine

    name, res = run
    prompt = "Net interest margin rose because"
    with Engine(res.out / "model-f16.gguf", n_ctx=128, n_threads=1) as merged:
        want = merged.generate(prompt, max_tokens=24)
        list(want)
    with Engine(res.out / "base-f16.gguf", n_ctx=128, n_threads=1) as e:
        plain = e.generate(prompt, max_tokens=24)
        list(plain)
        e.set_adapters(e.load_adapter(res.out / "adapter-f16.gguf"))
        got = e.generate(prompt, max_tokens=24)
        list(got)
    assert got.tokens == want.tokens, name
    assert plain.tokens != want.tokens, f"{name}: the adapter changes no greedy token; the check proves nothing"


def test_adapter_file_conventions(run):
    from gguf import GGUFReader

    name, res = run
    r = GGUFReader(res.out / "adapter-f16.gguf")
    f = {k: v.contents() for k, v in r.fields.items()}
    assert f["general.type"] == "adapter" and f["adapter.type"] == "lora" and f["adapter.lora.alpha"] == 0.0
    assert f["general.architecture"] == ("qwen2" if name.startswith("qwen2") else "llama")
    base = {t.name: t for t in GGUFReader(res.out / "base-f16.gguf").tensors}
    pairs = {t.name[:-7]: {} for t in r.tensors}
    for t in r.tensors:
        assert t.tensor_type.name == "F16"
        pairs[t.name[:-7]][t.name[-1]] = [int(x) for x in t.shape]
    for w, ab in pairs.items():
        n_in, n_out = (int(x) for x in base[w].shape)
        assert ab["a"][0] == n_in and ab["b"][1] == n_out and ab["a"][1] == ab["b"][0], (w, ab)
    if name == "llama-patterns":
        assert pairs["blk.0.attn_v.weight"]["a"][1] == 2 and pairs["blk.1.attn_q.weight"]["a"][1] == 6
        names = {row["name"] for row in res.quality}
        assert {"f16", "q8_0", "base-f16+adapter", "base-q8_0+adapter"} <= names
        assert (res.out / "base-q8_0.gguf").exists()
    if name == "qwen2-mlp":
        assert "blk.1.ffn_down.weight" in pairs


def test_refused_combinations(tmp_path):
    model = make_tiny_base(tmp_path / "base", "llama", smollm2_tokenizer_dir())
    make_adapter(model, tmp_path / "lora")
    o = ConvertOptions(base=tmp_path / "base", lora=tmp_path / "lora", out=tmp_path / "out", progress=False,
                       adapter_gguf=True, awq=True, quants=["q4_0"])
    with pytest.raises(UnsupportedAdapterError, match="--awq"):
        convert(o)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    make_adapter(model, tmp_path / "lora2", modules_to_save=["norm"], targets=("q_proj",))
    o = ConvertOptions(base=tmp_path / "base", lora=tmp_path / "lora2", out=tmp_path / "out2", progress=False,
                       adapter_gguf=True, quants=[])
    with pytest.raises(UnsupportedAdapterError, match="modules_to_save"):
        convert(o)


def test_shipped_adapter_on_smollm2_is_the_merged_model(tmp_path):
    """The tiny random adapters above are extreme (logit deltas of ~10 through random weights), so their
    bound is relative. The real case is tight: SmolLM2-135M + the shipped finance LoRA (rank 8), the F16 base
    with the F16 adapter applied at run time against the merged F16 model."""
    res = convert(ConvertOptions(out=tmp_path / "out", progress=False, quants=[], task=False, parity=False,
                                 cross_check=False, eval_chunks=4, adapter_gguf=True))
    rng = np.random.default_rng(1)
    tokens = [1] + [int(t) for t in rng.integers(100, 40000, size=127)]
    merged, base, runtime = _logits(res.out, tokens, 256)
    effect, err = float(np.abs(merged - base).max()), float(np.abs(merged - runtime).max())
    print(f"shipped adapter: effect {effect:.3f}, runtime vs merged max |diff| {err:.4f}")
    assert effect > 1.0, effect
    assert err < 0.02 * effect, (err, effect)
    row = next(r for r in res.quality if r["name"] == "base-f16+adapter")
    assert row["mean_kld"] < 1e-4 and row["top1_agreement"] >= 0.99, row
