"""The merge W' = W + s*B@A reproduces PEFT's own forward (unmerged adapter) on the same input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch  # noqa: E402  (the convert extra: scripts/bootstrap.sh installs it; never skipped)

from convert_helpers import make_adapter, make_tiny_base, smollm2_tokenizer_dir  # noqa: E402
from finllm_edge_convert.adapter import LoraAdapter  # noqa: E402
from finllm_edge_convert.hf_loader import load_base  # noqa: E402
from finllm_edge_convert.merge import merge_weight, merged_tensors  # noqa: E402

pytestmark = pytest.mark.convert
SHIPPED = Path(__file__).resolve().parent.parent / "convert" / "adapters" / "smollm2-finance-lora"


def merged_model(base_dir_or_file, lora_dir, base=None):
    from transformers import AutoModelForCausalLM

    base = base or load_base(base_dir_or_file)
    adapter = LoraAdapter.load(lora_dir, base=base)
    sd = dict(merged_tensors(base, adapter))
    model = AutoModelForCausalLM.from_config(base.config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    if base.config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def peft_logits(model, lora_dir, ids):
    from peft import PeftModel

    pm = PeftModel.from_pretrained(model, lora_dir).eval()
    with torch.no_grad():
        return pm(ids).logits


VARIANTS = {
    "plain": {},
    "rank_and_alpha_patterns": {"rank_pattern": {"v_proj": 2, "layers.1.self_attn.q_proj": 6},
                                "alpha_pattern": {"o_proj": 3, "k_proj": 32}},
    "rslora": {"use_rslora": True},
    "mlp_targets": {"targets": ("gate_proj", "up_proj", "down_proj", "q_proj")},
}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_merge_matches_peft_forward(tmp_path, arch, variant):
    kw = dict(VARIANTS[variant])
    targets = kw.pop("targets", ("q_proj", "k_proj", "v_proj", "o_proj"))
    model = make_tiny_base(tmp_path / "base", arch, smollm2_tokenizer_dir())
    make_adapter(model, tmp_path / "lora", targets=targets, **kw)
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base_logits = model(ids).logits                     # before PEFT injects its layers into `model`
    want = peft_logits(model, tmp_path / "lora", ids)
    with torch.no_grad():
        got = merged_model(tmp_path / "base", tmp_path / "lora")(ids).logits
    assert (want - base_logits).abs().max() > 1e-2          # the adapter really changes the model
    torch.testing.assert_close(got, want, rtol=1e-3, atol=5e-4)  # fp32 summation-order noise only


def test_patterns_set_scale_per_module(tmp_path):
    model = make_tiny_base(tmp_path / "base", "llama", smollm2_tokenizer_dir())
    make_adapter(model, tmp_path / "lora", r=4, alpha=8, rank_pattern={"v_proj": 2}, alpha_pattern={"o_proj": 3})
    ad = LoraAdapter.load(tmp_path / "lora", base=load_base(tmp_path / "base"))
    m = ad.modules
    assert m["model.layers.0.self_attn.q_proj.weight"].scale == 8 / 4
    assert m["model.layers.0.self_attn.v_proj.weight"].rank == 2
    assert m["model.layers.0.self_attn.v_proj.weight"].scale == 8 / 2
    assert m["model.layers.1.self_attn.o_proj.weight"].scale == 3 / 4


def test_fan_in_fan_out_flag_on_linear_is_ignored_like_peft(tmp_path):
    model = make_tiny_base(tmp_path / "base", "llama", smollm2_tokenizer_dir())
    with pytest.warns(UserWarning, match="fan_in_fan_out"):
        make_adapter(model, tmp_path / "lora", fan_in_fan_out=True)
    from convert_helpers import edit_adapter_config

    edit_adapter_config(tmp_path / "lora", fan_in_fan_out=True)   # PEFT rewrote it to false on save
    ids = torch.randint(0, model.config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning, match="fan_in_fan_out"):
        want = peft_logits(model, tmp_path / "lora", ids)
    with torch.no_grad():
        got = merged_model(tmp_path / "base", tmp_path / "lora")(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_fan_in_fan_out_on_conv1d_matches_peft():
    """GPT-2 style Conv1D stores W as (in, out); PEFT's fan_in_fan_out transposes the delta."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=32)).eval()
    w = gpt2.transformer.h[0].attn.c_attn.weight.detach().clone()
    b = gpt2.transformer.h[0].attn.c_attn.bias.detach().clone()
    pm = get_peft_model(gpt2, LoraConfig(r=4, lora_alpha=12, target_modules=["c_attn"], fan_in_fan_out=True))
    layer = pm.base_model.model.transformer.h[0].attn.c_attn
    with torch.no_grad():
        layer.lora_A["default"].weight.normal_()
        layer.lora_B["default"].weight.normal_()
        x = torch.randn(3, 32)
        want = layer(x)
        merged = merge_weight(w, layer.lora_A["default"].weight, layer.lora_B["default"].weight, 12 / 4,
                              fan_in_fan_out=True)
    torch.testing.assert_close(x @ merged + b, want, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_smollm2_shipped_adapter_matches_peft():
    from finllm_edge.models import default_model_path
    from finllm_edge_convert.hf_loader import build_model_from_base

    base_path = default_model_path()
    ids = torch.tensor([[1, 9690, 198, 504, 3458, 282, 2117, 1159, 314, 260, 3136, 1345, 30, 2]])
    base = load_base(base_path)
    want = peft_logits(build_model_from_base(base), SHIPPED, ids)
    with torch.no_grad():
        got = merged_model(base_path, SHIPPED, base=base)(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-4)


@pytest.mark.parametrize("arch,cls", [("llama", "LlamaForCausalLM"), ("qwen2", "Qwen2ForCausalLM")])
def test_merged_config_names_its_architecture(tmp_path, arch, cls):
    """A config read from a GGUF base has no `architectures`; the merged folder must name it,
    or the ONNX export (and transformers' Auto classes) cannot tell what it holds."""
    import json

    from finllm_edge_convert.merge import write_merged

    model = make_tiny_base(tmp_path / "base", arch, smollm2_tokenizer_dir())
    make_adapter(model, tmp_path / "lora")
    base = load_base(tmp_path / "base")
    base.config.architectures = None
    write_merged(base, LoraAdapter.load(tmp_path / "lora", base=base), tmp_path / "merged")
    assert json.loads((tmp_path / "merged" / "config.json").read_text())["architectures"] == [cls]
