"""Hostile model files and prompt files (issue 20) through the entry points that the corpus
tests (test_bad_models_e2e.py: Engine and fe-bench over every corpus file, test_jni.py: the
JNI class) do not cover: the CLI, fe-bench's --prompt-file, and a held-back corpus built
from a model no other test uses.

The held-back corpus: a tiny random 2-layer Qwen2 written by the `gguf` package (not by
tests/gen_bad_gguf.py's serializer), with its own vocabulary and merges, and one file per
semantic defect class re-expressed for it. Each goes through the C API the way an app loads
a model (tests/c/fe_load_worker.c: fe_model_load, session, tokenize, one token) in a
restartable worker: the valid base must run, every defect must be refused by the validator
naming its field: 0 signals, 0 hangs, 0 silent accepts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_bad_gguf as gen  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# the seven abort classes of issue 20, the 'llama'-over-BPE chat abort, and silent nonsense
CLI_CASES = [
    "expert_count_huge",
    "expert_used_without_experts",
    "expert_groups_without_experts",
    "nextn_above_block_count",
    "head_count_kv_array_zero",
    "rms_eps_nan",
    "rope_scaling_type_bogus",
    "tokenizer_llama_over_bpe",
    "bos_out_of_range",
    "rope_freq_base_zero",
    "rope_scale_negative",
    "token_types_all_control",
    "merges_unknown_token",
    "token_not_utf8",
    "scores_longer_than_tokens",
]


def _values_script():
    spec = importlib.util.spec_from_file_location("fuzz_gguf_values", ROOT / "scripts/fuzz_gguf_values.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.native
@pytest.mark.parametrize("name", CLI_CASES)
def test_cli_run_refuses_hostile_model_without_traceback(name, tmp_path):
    data, field = gen.defect_cases()[name]
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-m", "finllm_edge.lab.cli", "run", str(path), "-p", "hi", "-n", "1"],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
    )
    said = proc.stdout + proc.stderr
    assert proc.returncode not in (0,) and proc.returncode > 0, (proc.returncode, said[-800:])  # not a signal
    assert "Traceback" not in said, said[-2000:]
    assert f"'{field}'" in said, said[-800:]


# -- fe-bench --prompt-file ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fe_bench():
    from finllm_edge.native.build import ensure_built

    return ensure_built("host").fe_bench


@pytest.mark.native
@pytest.mark.parametrize("kind", ["dev_zero", "directory", "fifo", "too_big", "empty"])
def test_fe_bench_prompt_file_is_bounded(fe_bench, kind, tmp_path):
    tiny = gen.write_valid_tiny(tmp_path / "tiny.gguf")
    if kind == "dev_zero":
        pf, words = "/dev/zero", "not a regular file"
    elif kind == "directory":
        pf, words = str(tmp_path), "not a regular file"
    elif kind == "fifo":
        pf, words = str(tmp_path / "fifo"), "not a regular file"
        os.mkfifo(pf)  # nobody writes: reading it would block forever
    elif kind == "too_big":
        pf, words = str(tmp_path / "big.txt"), "16 MiB"
        with open(pf, "wb") as f:
            f.truncate((16 << 20) + 1)  # sparse
    else:
        pf, words = str(tmp_path / "empty.txt"), "empty or not text"
        Path(pf).write_bytes(b"")
    proc = subprocess.run(
        [str(fe_bench), "-m", str(tiny), "--prompt-file", pf, "-n", "1", "-r", "1"],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
    )
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-500:])
    assert "--prompt-file" in proc.stderr and words in proc.stderr, proc.stderr[-500:]


# -- held-back corpus: a tiny random Qwen2 written by the gguf package --------------------

QWEN_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "t",
    "o",
    "k",
    "e",
    "n",
    "Ġ",
    "to",
    "ke",
    "en",
    "ken",
    "Ġt",
    "Ġto",
    "token",
    "\u010a",
    "!",
]
QWEN_MERGES = ["t o", "k e", "e n", "k en", "Ġ t", "Ġt o", "to ken"]
N_EMBD, N_HEAD, N_HEAD_KV, N_FF, N_LAYER = 48, 6, 2, 80, 2


def qwen2_kvs() -> dict[str, tuple[str, object]]:
    """key -> (gguf value type name, value); arrays: ('arr:<elem>', list)."""
    n = len(QWEN_TOKENS)
    return {
        "qwen2.block_count": ("UINT32", N_LAYER),
        "qwen2.context_length": ("UINT32", 256),
        "qwen2.embedding_length": ("UINT32", N_EMBD),
        "qwen2.feed_forward_length": ("UINT32", N_FF),
        "qwen2.attention.head_count": ("UINT32", N_HEAD),
        "qwen2.attention.head_count_kv": ("UINT32", N_HEAD_KV),
        "qwen2.rope.freq_base": ("FLOAT32", 1000000.0),
        "qwen2.attention.layer_norm_rms_epsilon": ("FLOAT32", 1e-6),
        "tokenizer.ggml.model": ("STRING", "gpt2"),
        "tokenizer.ggml.pre": ("STRING", "qwen2"),
        "tokenizer.ggml.tokens": ("arr:STRING", QWEN_TOKENS),
        "tokenizer.ggml.token_type": ("arr:INT32", [3, 3, 3] + [1] * (n - 3)),
        "tokenizer.ggml.merges": ("arr:STRING", QWEN_MERGES),
        "tokenizer.ggml.eos_token_id": ("UINT32", 2),
        "tokenizer.ggml.padding_token_id": ("UINT32", 0),
        "tokenizer.ggml.bos_token_id": ("UINT32", 0),
        "tokenizer.ggml.add_bos_token": ("BOOL", False),
    }


def write_qwen2(path: Path, kvs: dict, seed: int = 7) -> Path:
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch="qwen2")
    for key, (vt, val) in kvs.items():
        if vt.startswith("arr:"):
            w.add_key_value(key, val, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType[vt[4:]])
        else:
            w.add_key_value(key, val, gguf.GGUFValueType[vt])
    e, f, kv, n = N_EMBD, N_FF, N_EMBD // N_HEAD * N_HEAD_KV, len(QWEN_TOKENS)

    def t(name, *shape):  # numpy shapes are ggml's reversed
        w.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))

    t("token_embd.weight", n, e)
    t("output_norm.weight", e)
    for i in range(N_LAYER):
        t(f"blk.{i}.attn_norm.weight", e)
        t(f"blk.{i}.attn_q.weight", e, e), t(f"blk.{i}.attn_q.bias", e)
        t(f"blk.{i}.attn_k.weight", kv, e), t(f"blk.{i}.attn_k.bias", kv)
        t(f"blk.{i}.attn_v.weight", kv, e), t(f"blk.{i}.attn_v.bias", kv)
        t(f"blk.{i}.attn_output.weight", e, e)
        t(f"blk.{i}.ffn_norm.weight", e)
        t(f"blk.{i}.ffn_gate.weight", f, e), t(f"blk.{i}.ffn_up.weight", f, e), t(f"blk.{i}.ffn_down.weight", e, f)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


NAN, INF = float("nan"), float("inf")
TT = [3, 3, 3] + [1] * (len(QWEN_TOKENS) - 3)
# name -> (changes: {key: (type, value)} or None to delete, expected field)
QWEN_DEFECTS = {
    "expert_count_huge": ({"qwen2.expert_count": ("UINT32", 5000)}, "qwen2.expert_count"),
    "expert_used_without_experts": ({"qwen2.expert_used_count": ("UINT32", 1)}, "qwen2.expert_used_count"),
    "expert_groups_without_experts": ({"qwen2.expert_group_count": ("UINT32", 4)}, "qwen2.expert_group_count"),
    "expert_group_used_without_experts": (
        {"qwen2.expert_group_used_count": ("UINT32", 2)},
        "qwen2.expert_group_used_count",
    ),
    "nextn_above_block_count": ({"qwen2.nextn_predict_layers": ("UINT32", N_LAYER + 1)}, "qwen2.nextn_predict_layers"),
    "head_count_kv_layer_zero": (
        {"qwen2.attention.head_count_kv": ("arr:INT32", [2, 0])},
        "qwen2.attention.head_count_kv",
    ),
    "head_count_kv_not_divisor": ({"qwen2.attention.head_count_kv": ("UINT32", 4)}, "qwen2.attention.head_count_kv"),
    "rms_eps_nan": (
        {"qwen2.attention.layer_norm_rms_epsilon": ("FLOAT32", NAN)},
        "qwen2.attention.layer_norm_rms_epsilon",
    ),
    "rms_eps_inf": (
        {"qwen2.attention.layer_norm_rms_epsilon": ("FLOAT32", INF)},
        "qwen2.attention.layer_norm_rms_epsilon",
    ),
    "rope_scaling_type_bogus": ({"qwen2.rope.scaling.type": ("STRING", "ntk")}, "qwen2.rope.scaling.type"),
    "rope_freq_base_zero": ({"qwen2.rope.freq_base": ("FLOAT32", 0.0)}, "qwen2.rope.freq_base"),
    "rope_freq_base_neg_inf": ({"qwen2.rope.freq_base": ("FLOAT32", -INF)}, "qwen2.rope.freq_base"),
    "rope_scale_zero": ({"qwen2.rope.scaling.factor": ("FLOAT32", 0.0)}, "qwen2.rope.scaling.factor"),
    "rope_scale_negative": ({"qwen2.rope.scaling.factor": ("FLOAT32", -4.0)}, "qwen2.rope.scaling.factor"),
    "rope_dimension_mismatch": ({"qwen2.rope.dimension_count": ("UINT32", 4)}, "qwen2.rope.dimension_count"),
    "value_length_differs": ({"qwen2.attention.value_length": ("UINT32", 4)}, "qwen2.attention.value_length"),
    "alignment_below_32": ({"general.alignment": ("UINT32", 8)}, "general.alignment"),
    "tokenizer_llama_over_bpe": ({"tokenizer.ggml.model": ("STRING", "llama")}, "tokenizer.ggml.model"),
    "bos_out_of_range": ({"tokenizer.ggml.bos_token_id": ("UINT32", len(QWEN_TOKENS))}, "tokenizer.ggml.bos_token_id"),
    "eos_out_of_range": ({"tokenizer.ggml.eos_token_id": ("UINT32", 151645)}, "tokenizer.ggml.eos_token_id"),
    "pad_out_of_range": ({"tokenizer.ggml.padding_token_id": ("UINT32", 1 << 31)}, "tokenizer.ggml.padding_token_id"),
    "scores_short": ({"tokenizer.ggml.scores": ("arr:FLOAT32", [0.0] * 3)}, "tokenizer.ggml.scores"),
    "scores_long": (
        {"tokenizer.ggml.scores": ("arr:FLOAT32", [0.0] * (len(QWEN_TOKENS) + 2))},
        "tokenizer.ggml.scores",
    ),
    "token_type_long": ({"tokenizer.ggml.token_type": ("arr:INT32", TT + [1])}, "tokenizer.ggml.token_type"),
    "token_type_out_of_range": (
        {"tokenizer.ggml.token_type": ("arr:INT32", TT[:-1] + [9])},
        "tokenizer.ggml.token_type",
    ),
    "token_types_all_control": (
        {"tokenizer.ggml.token_type": ("arr:INT32", [3] * len(TT))},
        "tokenizer.ggml.token_type",
    ),
    "token_types_all_user_defined": (
        {"tokenizer.ggml.token_type": ("arr:INT32", [4] * len(TT))},
        "tokenizer.ggml.token_type",
    ),
    "token_typed_byte": ({"tokenizer.ggml.token_type": ("arr:INT32", TT[:-1] + [6])}, "tokenizer.ggml.token_type"),
    "merges_garbage": ({"tokenizer.ggml.merges": ("arr:STRING", ["to", *QWEN_MERGES[1:]])}, "tokenizer.ggml.merges"),
    "merges_unknown_token": ({"tokenizer.ggml.merges": ("arr:STRING", QWEN_MERGES + ["q z"])}, "tokenizer.ggml.merges"),
    "merges_missing": ({"tokenizer.ggml.merges": None}, "tokenizer.ggml.merges"),
    "tokens_vs_embedding_rows": (
        {
            "tokenizer.ggml.tokens": ("arr:STRING", QWEN_TOKENS[:-1]),
            "tokenizer.ggml.token_type": ("arr:INT32", TT[:-1]),
        },
        "tokenizer.ggml.tokens",
    ),
    "block_count_zero": ({"qwen2.block_count": ("UINT32", 0)}, "qwen2.block_count"),
    "block_count_huge": ({"qwen2.block_count": ("UINT32", 513)}, "qwen2.block_count"),
}


def _worker_results(exe: Path, paths: list[Path]) -> dict[str, tuple[str, str]]:
    fv = _values_script()
    w = fv.Worker(exe, timeout=30)
    try:
        return {p.stem: w.run(p) for p in paths}
    finally:
        w.close()


@pytest.mark.slow
@pytest.mark.native
def test_held_back_qwen2_corpus_zero_signals_hangs_and_silent_accepts(tmp_path):
    base_kvs = qwen2_kvs()
    base = write_qwen2(tmp_path / "valid_qwen2.gguf", base_kvs)
    paths = []
    for name, (changes, _field) in QWEN_DEFECTS.items():
        kvs = dict(base_kvs)
        for k, v in changes.items():
            if v is None:
                kvs.pop(k)
            else:
                kvs[k] = v
        paths.append(write_qwen2(tmp_path / f"{name}.gguf", kvs))
    exe = _values_script().build_worker(tmp_path)
    results = _worker_results(exe, [base, *paths])
    assert results["valid_qwen2"][0] == "ran", results["valid_qwen2"]
    kinds = {n: r for n, r in results.items() if n != "valid_qwen2"}
    summary = {
        k: sum(r[0] == k for r in kinds.values()) for k in ("refused", "ran", "llama_error", "signal", "hang", "died")
    }
    wrong = {n: (QWEN_DEFECTS[n][1], r) for n, r in kinds.items() if r != ("refused", QWEN_DEFECTS[n][1])}
    assert summary["signal"] == summary["hang"] == summary["died"] == 0, json.dumps(wrong, indent=1)
    assert summary["ran"] == 0 and summary["llama_error"] == 0, json.dumps(wrong, indent=1)  # no silent accept
    assert not wrong, json.dumps(wrong, indent=1)
