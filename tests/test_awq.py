"""AWQ: the float model is unchanged by folding; the search beats plain quantization on
outlier channels; it is deterministic; our grids are llama.cpp's grids."""


import gguf  # noqa: E402
import numpy as np
import pytest
import torch  # noqa: E402  (the convert extra: scripts/bootstrap.sh installs it; never skipped)
from gguf import quants  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from finllm_edge_convert import awq, quant_grids  # noqa: E402

pytestmark = pytest.mark.convert


def tiny_llama(n_kv=4):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=n_kv, max_position_embeddings=128,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def tiny_qwen2():
    torch.manual_seed(1)
    cfg = Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return Qwen2ForCausalLM(cfg).eval()


def _randomise_norms(model):
    # Fresh models have all-ones norms; make the fold visible.
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.5 + torch.rand(p.shape, generator=g))


@pytest.mark.parametrize("make,expect_attn_out",
                         [(lambda: tiny_llama(4), True), (lambda: tiny_llama(2), False), (tiny_qwen2, False)])
def test_folding_preserves_the_float_model(make, expect_attn_out):
    model = make()
    _randomise_norms(model)
    ids = torch.randint(0, 96, (1, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    opts = awq.AWQOptions(target="q4_0", grid=10, sample_tokens=64)
    stats, _ = awq.calibrate(model, [ids[0]], opts)
    res = awq.search_and_apply(model, stats, opts)
    assert any(a > 0 for a in res.alphas.values()), "no group was scaled, the test proves nothing"
    assert any(name.endswith("attn_out") for name in res.alphas) == expect_attn_out
    with torch.no_grad():
        after = model(input_ids=ids).logits
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_search_beats_plain_quantization_on_outlier_channels():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 128, generator=g)
    x[:, :4] *= 40.0  # a few activation outlier channels, as LLMs have
    w = torch.randn(64, 128, generator=g) * 0.02
    quant = quant_grids.q4_0
    s, alpha, plain, best = awq.best_scale(x, x.abs().mean(0), [w], quant, grid=20)
    assert alpha > 0
    assert best < 0.8 * plain, (best, plain)


def test_search_is_deterministic():
    def run():
        model = tiny_llama(4)
        _randomise_norms(model)
        ids = torch.randint(0, 96, (1, 48), generator=torch.Generator().manual_seed(7))
        opts = awq.AWQOptions(target="q4_k_m", grid=8, sample_tokens=32, clip=True, clip_grid=4, seed=11)
        stats, _ = awq.calibrate(model, [ids[0]], opts)
        res = awq.search_and_apply(model, stats, opts)
        return res.alphas, {k: v.clone() for k, v in model.state_dict().items()}

    a1, s1 = run()
    a2, s2 = run()
    assert a1 == a2
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k


@pytest.mark.parametrize("name,qtype", [("q4_0", gguf.GGMLQuantizationType.Q4_0),
                                        ("q5_0", gguf.GGMLQuantizationType.Q5_0),
                                        ("q8_0", gguf.GGMLQuantizationType.Q8_0)])
def test_grids_match_ggml_reference_quantizers(name, qtype):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((16, 256)) * rng.uniform(0.01, 2, (16, 1))).astype(np.float32)
    ref = quants.dequantize(quants.quantize(w, qtype), qtype)
    ours = quant_grids.GRIDS[name](torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_q4_k_grid_is_a_4bit_grid_with_6bit_scales():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(8, 512, generator=g)
    deq = quant_grids.q4_k(w)
    err = float((deq - w).pow(2).mean().sqrt() / w.pow(2).mean().sqrt())
    assert 0.02 < err < 0.12  # 4-bit asymmetric: clearly lossy, clearly better than nothing
    # each 32-wide sub-block holds at most 16 distinct values
    sub = deq.reshape(8, 16, 32)
    assert max(len(torch.unique(b)) for b in sub.reshape(-1, 32)) <= 16


def test_grid_for_follows_llama_quantize_fallback():
    assert quant_grids.grid_for("q4_k_m", 576) is quant_grids.q5_0
    assert quant_grids.grid_for("q4_k_m", 1536) is quant_grids.q4_k
    with pytest.raises(ValueError, match="no quantization grid"):
        quant_grids.grid_for("q3_xx", 64)
