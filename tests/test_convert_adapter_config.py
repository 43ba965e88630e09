"""adapter_config.json: hostile and malformed configs are refused quickly with a typed error (issue 20), and
target_modules / layers_to_transform / exclude_modules / modules_to_save mean exactly what they mean in PEFT:
the merge equals PEFT's own merge_and_unload(), to the bit, and configs PEFT refuses are refused."""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

import pytest
import torch  # noqa: E402  (the convert extra: scripts/bootstrap.sh installs it; never skipped)

from convert_helpers import edit_adapter_config, make_adapter, make_tiny_base, smollm2_tokenizer_dir  # noqa: E402
from finllm_edge_convert import checks  # noqa: E402
from finllm_edge_convert.adapter import LoraAdapter  # noqa: E402
from finllm_edge_convert.errors import (  # noqa: E402
    AdapterConfigError,
    AdapterMismatchError,
    ConversionError,
    UnsupportedAdapterError,
)
from finllm_edge_convert.hf_loader import load_base  # noqa: E402
from finllm_edge_convert.merge import merged_tensors  # noqa: E402

pytestmark = pytest.mark.convert
EVAL = Path(__file__).resolve().parent.parent / "convert" / "data" / "finance_heldout.txt"
FIVE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapter-config")
    llama = make_tiny_base(root / "llama", "llama", smollm2_tokenizer_dir())
    make_adapter(llama, root / "lora", targets=FIVE)
    qwen = make_tiny_base(root / "qwen2", "qwen2", smollm2_tokenizer_dir(), seed=3)
    return root, llama, qwen


def copy_lora(root: Path, dst: Path) -> Path:
    shutil.copytree(root / "lora", dst)
    return dst


def preflight(base, lora, out):
    return checks.preflight(base, lora, out, ["f16"], {"--eval": EVAL}, scan_finite=False)


# ---- issue 20: malformed and hostile configs ------------------------------------------------------------

def write_config(lora: Path, cfg) -> None:
    (lora / "adapter_config.json").write_text(json.dumps(cfg) if not isinstance(cfg, str) else cfg)


BAD_CONFIGS = {
    "alpha_is_a_word": ({"lora_alpha": "sixteen"}, "lora_alpha must be a finite number"),
    "r_is_a_word": ({"r": "eight"}, "r must be an integer rank >= 1"),
    "r_fractional": ({"r": 2.5}, "r must be an integer rank >= 1"),
    "r_bool": ({"r": True}, "r must be an integer rank >= 1"),
    "alpha_zero": ({"lora_alpha": 0}, r"lora_alpha must be a finite number in \(0"),
    "alpha_negative": ({"lora_alpha": -16}, r"lora_alpha must be a finite number in \(0"),
    "alpha_nan": ({"lora_alpha": float("nan")}, "lora_alpha must be a finite number"),
    "alpha_1e300": ({"lora_alpha": 1e300}, "lora_alpha must be a finite number"),
    "alpha_pattern_inf": ({"alpha_pattern": {"q_proj": float("inf")}}, r"alpha_pattern\['q_proj'\]"),
    "rank_pattern_zero": ({"rank_pattern": {"v_proj": 0}}, r"rank_pattern\['v_proj'\]"),
    "invalid_regex": ({"rank_pattern": {"q_proj(": 2}}, "not a valid regular expression"),
    "invalid_target_regex": ({"target_modules": ".*[proj"}, "target_modules .* not a valid regular expression"),
    "target_modules_number": ({"target_modules": 7}, "target_modules must be a string or a list of strings"),
    "layers_negative": ({"layers_to_transform": [-1]}, "layers_to_transform must be"),
    "rslora_string": ({"use_rslora": "yes"}, "use_rslora must be true or false"),
    # PEFT's own refusals (LoraConfig.__post_init__), reported as such
    "layers_with_regex_target": ({"target_modules": ".*q_proj", "layers_to_transform": [0]},
                                 "PEFT refuses this config: .*layers_to_transform"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_malformed_config_is_a_typed_error_before_any_work(tiny, tmp_path, case):
    root, _, _ = tiny
    change, message = BAD_CONFIGS[case]
    lora = copy_lora(root, tmp_path / "lora")
    cfg = json.loads((lora / "adapter_config.json").read_text())
    cfg.update(change)
    write_config(lora, cfg)
    t0 = time.perf_counter()
    with pytest.raises(AdapterConfigError, match=message) as info:
        preflight(root / "llama", lora, tmp_path / "out")
    assert isinstance(info.value, ConversionError)
    assert time.perf_counter() - t0 < 20
    assert not (tmp_path / "out").exists()                 # nothing was created


@pytest.mark.parametrize("text, kind", [("[1, 2, 3]", "list"), ('"LORA"', "str"), ("{not json", None)])
def test_config_that_is_not_an_object(tiny, tmp_path, text, kind):
    root, _, _ = tiny
    lora = copy_lora(root, tmp_path / "lora")
    write_config(lora, text)
    with pytest.raises(AdapterConfigError, match=f"JSON {kind}" if kind else "not valid JSON"):
        preflight(root / "llama", lora, tmp_path / "out")


def test_catastrophic_backtracking_pattern_fails_fast(tiny, tmp_path):
    """PEFT matches rank_pattern keys with `re`; this one never finishes on a layer name (it hung convert's
    check stage until it was killed at 240 s). The resolution runs under a deadline instead."""
    root, _, _ = tiny
    lora = copy_lora(root, tmp_path / "lora")
    edit_adapter_config(lora, rank_pattern={r"(.*\.)*(\w+\.?)+x": 4})
    t0 = time.perf_counter()
    with pytest.raises(AdapterConfigError, match="backtracks catastrophically") as info:
        preflight(root / "llama", lora, tmp_path / "out")
    took = time.perf_counter() - t0
    assert took < 30, took
    assert "rank_pattern key" in str(info.value)


def test_rank_zero_with_zero_rank_weights(tiny, tmp_path):
    root, _, _ = tiny
    lora = copy_lora(root, tmp_path / "lora")
    from safetensors.torch import load_file, save_file

    sd = load_file(lora / "adapter_model.safetensors")
    sd = {k: (torch.zeros(0, v.shape[1]) if "lora_A" in k else torch.zeros(v.shape[0], 0)) for k, v in sd.items()}
    save_file(sd, lora / "adapter_model.safetensors")
    edit_adapter_config(lora, r=0)
    with pytest.raises(AdapterConfigError, match="r must be an integer rank >= 1"):
        preflight(root / "llama", lora, tmp_path / "out")


def test_no_traceback_through_the_cli(tiny, tmp_path, capsys):
    from finllm_edge.lab.cli import main

    root, _, _ = tiny
    lora = copy_lora(root, tmp_path / "lora")
    edit_adapter_config(lora, lora_alpha="sixteen")
    rc = main(["convert", "--base", str(root / "llama"), "--lora", str(lora), "--out", str(tmp_path / "out"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0 and "lora_alpha must be a finite number" in err and "Traceback" not in err


def test_overflowing_merge_fails_at_merge_not_quantize(tiny, tmp_path):
    """An alpha inside the schema's range can still overflow float16 with large weights: the merge names it."""
    root, llama, _ = tiny
    from finllm_edge_convert.merge import write_merged

    lora = copy_lora(root, tmp_path / "lora")
    from safetensors.torch import load_file, save_file

    sd = load_file(lora / "adapter_model.safetensors")
    save_file({k: v * 30 if "lora_B" in k else v for k, v in sd.items()}, lora / "adapter_model.safetensors")
    edit_adapter_config(lora, lora_alpha=65504)
    base = load_base(root / "llama")
    adapter = LoraAdapter.load(lora, base=base)
    with pytest.raises(ConversionError, match="non-finite values in float16"):
        write_merged(base, adapter, tmp_path / "merged")
    assert not (tmp_path / "merged" / "model.safetensors").exists()


# ---- PEFT's semantics, compared with PEFT's own merge ----------------------------------------------------

def peft_merged(model, lora_dir: Path) -> dict:
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = PeftModel.from_pretrained(copy.deepcopy(model), lora_dir)
    return {k: v.detach() for k, v in pm.merge_and_unload().state_dict().items()}


def ours_merged(base_dir: Path, lora_dir: Path) -> tuple[dict, LoraAdapter]:
    base = load_base(base_dir)
    adapter = LoraAdapter.load(lora_dir, base=base)
    return dict(merged_tensors(base, adapter)), adapter


def assert_bit_identical(ours: dict, peft: dict, base_model) -> list[str]:
    """Every tensor equal to the bit; returns the names that differ from the base (the ones merged)."""
    base_sd = base_model.state_dict()
    changed = []
    for name, t in ours.items():
        assert torch.equal(t, peft[name].to(t.dtype)), name
        if not torch.equal(t, base_sd[name]):
            changed.append(name)
    return sorted(changed)


CASES = {
    # config edits over weights for five module types in both layers
    "subset_list": ({"target_modules": ["q_proj", "v_proj"]}, {"q_proj", "v_proj"}, {0, 1}),
    "regex_string": ({"target_modules": r".*\.layers\.1\.self_attn\.(q|o)_proj"}, {"q_proj", "o_proj"}, {1}),
    "layers_to_transform": ({"layers_to_transform": [1]}, set(FIVE), {1}),
    "layers_int_and_pattern": ({"layers_to_transform": 0, "layers_pattern": "layers"}, set(FIVE), {0}),
    "exclude_list": ({"exclude_modules": ["k_proj", "gate_proj"]}, {"q_proj", "v_proj", "o_proj"}, {0, 1}),
    "exclude_regex": ({"exclude_modules": r".*\.layers\.0\..*"}, set(FIVE), {1}),
    "rank_alpha_patterns_rslora": ({"target_modules": ["q_proj", "gate_proj"], "use_rslora": True,
                                    "alpha_pattern": {"gate_proj": 5, r"layers\.1\.self_attn\.q_proj": 11}},
                                   {"q_proj", "gate_proj"}, {0, 1}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_targeting_matches_peft_merge_to_the_bit(tiny, tmp_path, case):
    root, llama, _ = tiny
    change, kinds, layers = CASES[case]
    lora = copy_lora(root, tmp_path / "lora")
    edit_adapter_config(lora, **change)
    ours, adapter = ours_merged(root / "llama", lora)
    changed = assert_bit_identical(ours, peft_merged(llama, lora), llama)
    want = sorted(f"model.layers.{i}.{'mlp' if k == 'gate_proj' else 'self_attn'}.{k}.weight"
                  for i in layers for k in kinds)
    assert changed == want
    assert sorted(adapter.modules) == want
    if len(want) < 2 * len(FIVE):
        assert any("not targeted by the config and were ignored, as PEFT ignores them" in n for n in adapter.notes)


def test_target_that_matches_nothing_is_refused_like_peft(tiny, tmp_path):
    root, llama, _ = tiny
    lora = copy_lora(root, tmp_path / "lora")
    edit_adapter_config(lora, target_modules=["foo_proj"])
    from peft import PeftModel

    with pytest.raises(ValueError, match="foo_proj"):              # PEFT refuses it ...
        PeftModel.from_pretrained(copy.deepcopy(llama), lora)
    with pytest.raises(AdapterMismatchError, match="foo_proj.*not found in the base model"):   # ... and so do we
        preflight(root / "llama", lora, tmp_path / "out")


def test_targeted_module_without_weights_is_refused(tiny, tmp_path):
    """PEFT would leave down_proj at its initialisation (a silent no-op); we refuse the mismatch."""
    root, _, _ = tiny
    lora = copy_lora(root, tmp_path / "lora")
    edit_adapter_config(lora, target_modules=list(FIVE) + ["down_proj"])
    with pytest.raises(AdapterMismatchError, match="no lora_A/lora_B weights.*down_proj"):
        preflight(root / "llama", lora, tmp_path / "out")


def test_modules_to_save_replace_the_base_like_peft(tiny, tmp_path):
    """Qwen2 (untied lm_head): modules_to_save copies in the file replace the base weights, as in PEFT."""
    root, _, qwen = tiny
    qdir = root / "qwen2"
    lora = tmp_path / "lora"
    pm = make_adapter(qwen, lora, targets=("q_proj", "down_proj"), modules_to_save=["lm_head", "norm"])
    with torch.no_grad():                                   # "train" the saved copies
        for n, p in pm.named_parameters():
            if "modules_to_save" in n:
                p.add_(0.05 * torch.randn_like(p))
    pm.save_pretrained(lora)
    ours, adapter = ours_merged(qdir, lora)
    changed = assert_bit_identical(ours, peft_merged(qwen, lora), qwen)
    assert "lm_head.weight" in changed and "model.norm.weight" in changed
    assert "model.layers.0.input_layernorm.weight" in changed       # PEFT's suffix rule: '...layernorm' ends in 'norm'
    assert "lm_head.weight" in adapter.saved


def test_modules_to_save_on_a_tied_embedding_is_refused(tiny, tmp_path):
    root, llama, _ = tiny
    make_adapter(llama, tmp_path / "lora", modules_to_save=["lm_head"])
    with pytest.raises(UnsupportedAdapterError, match="modules_to_save includes lm_head.*ties"):
        preflight(root / "llama", tmp_path / "lora", tmp_path / "out")
