"""Every input error is caught by the `check` stage, before any work, with a typed error that says what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch  # noqa: E402  (the convert extra: scripts/bootstrap.sh installs it; never skipped)

from convert_helpers import edit_adapter_config, make_adapter, make_tiny_base, smollm2_tokenizer_dir  # noqa: E402
from finllm_edge_convert import checks  # noqa: E402
from finllm_edge_convert.errors import (  # noqa: E402
    AdapterMismatchError,
    CorruptModelError,
    InputNotFoundError,
    InsufficientDiskError,
    OutputNotWritableError,
    UnsupportedAdapterError,
    UnsupportedArchitectureError,
)

pytestmark = pytest.mark.convert
EVAL = Path(__file__).resolve().parent.parent / "convert" / "data" / "finance_heldout.txt"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    model = make_tiny_base(root / "base", "llama", smollm2_tokenizer_dir())
    make_adapter(model, root / "lora")
    return root


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def run(base, lora, out, **kw):
    return checks.preflight(base, lora, out, ["f16", "q4_0"], {"--eval": kw.pop("eval_file", EVAL)}, **kw)


def test_good_inputs_pass(good, tmp_path):
    pre = run(good / "base", good / "lora", tmp_path / "out")
    assert pre.arch.name == "llama" and pre.n_params > 0 and len(pre.adapter.modules) == 8
    assert pre.bytes_needed > pre.n_params * 2


def test_missing_base(good, tmp_path):
    with pytest.raises(InputNotFoundError, match="--base"):
        run(tmp_path / "nope", good / "lora", tmp_path / "out")


def test_missing_adapter_weights(good, tmp_path):
    lora = copy(good / "lora", tmp_path / "lora")
    (lora / "adapter_model.safetensors").unlink()
    with pytest.raises(InputNotFoundError, match="adapter_model.safetensors"):
        run(good / "base", lora, tmp_path / "out")


def test_missing_adapter_config(good, tmp_path):
    lora = copy(good / "lora", tmp_path / "lora")
    (lora / "adapter_config.json").unlink()
    with pytest.raises(InputNotFoundError, match="adapter_config.json"):
        run(good / "base", lora, tmp_path / "out")


def test_missing_eval_text(good, tmp_path):
    with pytest.raises(InputNotFoundError, match="--eval"):
        run(good / "base", good / "lora", tmp_path / "out", eval_file=tmp_path / "missing.txt")


def test_adapter_for_a_different_hidden_size(good, tmp_path):
    other = make_tiny_base(tmp_path / "wide", "llama", smollm2_tokenizer_dir(), hidden=96)
    make_adapter(other, tmp_path / "wide-lora")
    with pytest.raises(AdapterMismatchError, match="different base"):
        run(good / "base", tmp_path / "wide-lora", tmp_path / "out")


def test_adapter_for_a_deeper_base(good, tmp_path):
    deep = make_tiny_base(tmp_path / "deep", "llama", smollm2_tokenizer_dir(), layers=3)
    make_adapter(deep, tmp_path / "deep-lora")
    with pytest.raises(AdapterMismatchError, match="3 layers|layer 2"):
        run(good / "base", tmp_path / "deep-lora", tmp_path / "out")


def test_adapter_targeting_modules_the_base_lacks(good, tmp_path):
    lora = copy(good / "lora", tmp_path / "lora")
    from safetensors.torch import load_file, save_file

    sd = load_file(lora / "adapter_model.safetensors")
    sd = {k.replace("q_proj", "c_attn"): v for k, v in sd.items()}
    save_file(sd, lora / "adapter_model.safetensors")
    with pytest.raises(AdapterMismatchError, match="c_attn"):
        run(good / "base", lora, tmp_path / "out")


def test_unsupported_architecture(good, tmp_path):
    base = copy(good / "base", tmp_path / "base")
    cfg = json.loads((base / "config.json").read_text())
    cfg.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (base / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitectureError, match="'gpt2' is not supported; supported: llama, qwen2"):
        run(base, good / "lora", tmp_path / "out")


@pytest.mark.parametrize("change, named", [
    ({"use_dora": True}, "DoRA"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"bias": "all"}, "bias"),
    ({"peft_type": "IA3"}, "IA3"),
])
def test_unsupported_lora_variants_are_named(good, tmp_path, change, named):
    lora = copy(good / "lora", tmp_path / "lora")
    edit_adapter_config(lora, **change)
    with pytest.raises(UnsupportedAdapterError, match=named):
        run(good / "base", lora, tmp_path / "out")


def test_dora_weights_without_the_flag_are_refused(good, tmp_path):
    lora = copy(good / "lora", tmp_path / "lora")
    from safetensors.torch import load_file, save_file

    sd = load_file(lora / "adapter_model.safetensors")
    sd["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = torch.ones(64)
    save_file(sd, lora / "adapter_model.safetensors")
    with pytest.raises(UnsupportedAdapterError, match="DoRA magnitude"):
        run(good / "base", lora, tmp_path / "out")


def test_nan_in_base_weights(good, tmp_path):
    base = copy(good / "base", tmp_path / "base")
    from safetensors.torch import load_file, save_file

    sd = load_file(base / "model.safetensors")
    sd["model.layers.1.mlp.down_proj.weight"][3, 5] = float("nan")
    save_file(sd, base / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CorruptModelError, match="down_proj.*NaN/Inf"):
        run(base, good / "lora", tmp_path / "out")


def test_inf_in_adapter(good, tmp_path):
    lora = copy(good / "lora", tmp_path / "lora")
    from safetensors.torch import load_file, save_file

    sd = load_file(lora / "adapter_model.safetensors")
    key = next(k for k in sd if "lora_B" in k)
    sd[key][0, 0] = float("inf")
    save_file(sd, lora / "adapter_model.safetensors")
    with pytest.raises(CorruptModelError, match="adapter tensor .*NaN/Inf"):
        run(good / "base", lora, tmp_path / "out")


def test_output_under_a_file(good, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputNotWritableError, match="a-file is a file, not a folder"):
        run(good / "base", good / "lora", blocker / "sub" / "out")
    assert blocker.read_text() == "not a folder"


def test_not_enough_disk(good, tmp_path, monkeypatch):
    real = shutil.disk_usage

    def tiny_disk(path):
        u = real(path)
        return type(u)(u.total, u.used, 1024)

    monkeypatch.setattr(checks.shutil, "disk_usage", tiny_disk)
    with pytest.raises(InsufficientDiskError, match="MiB is free"):
        run(good / "base", good / "lora", tmp_path / "out")


def test_cli_exits_nonzero_with_the_message(good, tmp_path, capsys):
    from finllm_edge.lab.cli import main

    lora = copy(good / "lora", tmp_path / "lora")
    edit_adapter_config(lora, use_dora=True)
    rc = main(["convert", "--base", str(good / "base"), "--lora", str(lora), "--out", str(tmp_path / "out"),
               "--no-progress"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "DoRA" in err and "Retrain as plain LoRA" in err
    assert not (tmp_path / "out" / "merged").exists()      # nothing was done


@pytest.mark.parametrize("args,message", [
    (["--formats", "gguf,tflite"], "unknown --formats"),
    (["--bpw-budget", "same"], "add --awq"),
])
def test_cli_refuses_options_that_do_not_fit_together(good, tmp_path, capsys, args, message):
    from finllm_edge.lab.cli import main

    rc = main(["convert", "--base", str(good / "base"), "--lora", str(good / "lora"), "--out", str(tmp_path / "out"),
               "--no-progress", *args])
    assert rc != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "merged").exists()


def test_cli_eval_text_takes_the_users_text(good, tmp_path, capsys):
    from finllm_edge.lab.cli import main

    rc = main(["convert", "--base", str(good / "base"), "--lora", str(good / "lora"), "--out", str(tmp_path / "out"),
               "--no-progress", "--eval-text", str(tmp_path / "my-own-text.txt")])
    err = capsys.readouterr().err
    assert rc != 0 and "my-own-text.txt does not exist; pass --eval FILE" in err
    assert not (tmp_path / "out").exists()
