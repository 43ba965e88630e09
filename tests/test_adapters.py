"""Runtime LoRA adapters through the Python binding (the rules are the core's, native/src/adapter.cpp):

- hostile adapter files are refused with AdapterFileError naming the problem: another architecture,
  shapes of another base, tensors the base does not have, unsupported kinds and types, corrupt and
  truncated files; a missing file is ModelNotFoundError;
- an active adapter changes the output, scale 0 / no adapter gives exactly the base's output, and
  swapping between requests gives exactly what a fresh Engine with that adapter gives;
- swapping mid-conversation empties the KV cache (nothing computed under other weights is reused);
  setting the same set again keeps it; saved state files record the adapter set;
- bad sets (scale out of range, duplicates, another Engine's adapter) are InvalidArgumentError.

Adapters are random GGUF LoRAs for SmolLM2 written by tests/adapter_files.py (numpy + gguf-py).
Runtime-vs-merged equality on F16 is in test_convert_adapter_gguf.py (needs torch).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from finllm_edge import ModelNotFoundError, default_model_path
from finllm_edge.engine import Engine
from finllm_edge.errors import AdapterFileError, InvalidArgumentError, StateFileError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import adapter_files as af  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.native]

PROMPT = "The debt-to-equity ratio of a bank measures"
TURN2 = PROMPT + " its leverage. A second question: what does the coverage ratio say about"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("adapters")
    base = default_model_path()
    fa = af.random_lora(base, seed=1)
    fb = af.random_lora(base, seed=2, targets=("attn_v", "attn_output"))
    return {"dir": d, "a": af.write_lora(d / "a.gguf", fa), "b": af.write_lora(d / "b.gguf", fb), "factors": fa}


@pytest.fixture(scope="module")
def engine():
    with Engine(n_ctx=512, n_threads=1) as e:
        yield e


def _run(engine: Engine, prompt: str, n: int = 16) -> list[int]:
    s = engine.generate(prompt, max_tokens=n)
    list(s)
    return s.tokens


def _reused(engine: Engine) -> int:
    return engine._times_of_last().n_prompt_reused


# ---- hostile files ------------------------------------------------------------------------

def _refused(engine: Engine, path: Path, *needles: str) -> str:
    with pytest.raises(AdapterFileError) as ei:
        engine.load_adapter(path)
    msg = str(ei.value)
    for n in needles:
        assert n in msg, f"{path.name}: {n!r} not in {msg!r}"
    return msg


def test_valid_adapter_loads_with_info(engine, files):
    a = engine.load_adapter(files["a"])
    try:
        assert a.info.n_tensors == 16 and a.info.rank_max == 8 and a.info.alpha == 0.0
        assert len(a.info.sha256) == 64 and a.info.name == "a"
        assert a.info.size_bytes == sum(2 * (x.size + y.size) for x, y in files["factors"].values())  # F16
    finally:
        a.close()
    a.close()  # idempotent


def test_adapter_for_another_architecture(engine, files):
    p = af.write_lora(files["dir"] / "qwen2.gguf", files["factors"], arch="qwen2")
    _refused(engine, p, "architecture 'qwen2'", "'llama'", "another base")


def test_adapter_with_shapes_of_another_base(engine, files):
    rng = np.random.default_rng(0)
    wrong = {"blk.0.attn_q.weight": (rng.standard_normal((8, 512)), rng.standard_normal((576, 8)))}
    _refused(engine, af.write_lora(files["dir"] / "n_in.gguf", wrong), "blk.0.attn_q.weight", "[512, 8]",
             "[576, 576]", "another base")
    wrong = {"blk.0.attn_k.weight": (rng.standard_normal((8, 576)), rng.standard_normal((576, 8)))}
    _refused(engine, af.write_lora(files["dir"] / "n_out.gguf", wrong), "blk.0.attn_k.weight", "[576, 192]")
    wrong = {"blk.0.attn_q.weight": (rng.standard_normal((8, 576)), rng.standard_normal((576, 4)))}
    _refused(engine, af.write_lora(files["dir"] / "rank.gguf", wrong), "blk.0.attn_q.weight", "do not fit")


def test_adapter_for_tensors_the_base_lacks(engine, files):
    a, b = files["factors"]["blk.0.attn_q.weight"]
    _refused(engine, af.write_lora(files["dir"] / "deep.gguf", {"blk.99.attn_q.weight": (a, b)}),
             "no tensor 'blk.99.attn_q.weight'")
    # SmolLM2 ties its output to the token embedding: there is no output.weight
    _refused(engine, af.write_lora(files["dir"] / "out.gguf", {"output.weight": (a, b)}), "output.weight")


def test_unsupported_kinds_and_types(engine, files):
    f, d = files["factors"], files["dir"]
    _refused(engine, af.write_lora(d / "cvec.gguf", f, adapter_type="control_vector"),
             "adapter.type is 'control_vector'")
    _refused(engine, af.write_lora(d / "model.gguf", f, general_type="model"), "general.type", "not 'adapter'")
    _refused(engine, af.write_lora(d / "notype.gguf", f, adapter_type=None), "adapter.type", "missing")
    alora = {"k": lambda w, k: w.add_array("adapter.alora.invocation_tokens", [1, 2, 3])}
    _refused(engine, af.write_lora(d / "alora.gguf", f, extra_kv=alora), "activated LoRA")
    _refused(engine, af.write_lora_q8(d / "q8.gguf", f), "type q8_0", "F32, F16 or BF16")
    norm = {"blk.0.attn_norm.weight.lora_a": np.ones((8, 576), np.float32),
            "blk.0.attn_norm.weight.lora_b": np.ones((2, 8), np.float32)}
    _refused(engine, af.write_lora(d / "norm.gguf", {}, extra_tensors=norm), "blk.0.attn_norm.weight",
             "does not adapt")
    stray = {"blk.0.attn_q.weight.delta": np.ones((4, 576), np.float32)}
    _refused(engine, af.write_lora(d / "stray.gguf", f, extra_tensors=stray), "neither .lora_a nor .lora_b")
    bad_alpha = af.write_lora(d / "alpha.gguf", f, alpha=float("nan"))
    _refused(engine, bad_alpha, "adapter.lora.alpha")


def test_corrupt_and_missing_files(engine, files):
    d, good = files["dir"], files["a"].read_bytes()
    (d / "trunc.gguf").write_bytes(good[: len(good) // 2])
    _refused(engine, d / "trunc.gguf", "past the end")
    (d / "magic.gguf").write_bytes(b"GGUX" + good[4:])
    _refused(engine, d / "magic.gguf")
    (d / "empty.gguf").write_bytes(b"")
    _refused(engine, d / "empty.gguf")
    huge = bytearray(good)
    huge[8:16] = (1 << 40).to_bytes(8, "little")  # tensor count
    (d / "count.gguf").write_bytes(bytes(huge))
    _refused(engine, d / "count.gguf")
    a, _ = files["factors"]["blk.0.attn_q.weight"]
    half = af.write_lora(d / "half.gguf", {}, extra_tensors={"blk.0.attn_q.weight.lora_a": a.astype(np.float16)})
    _refused(engine, half, "has lora_a but not lora_b")
    with pytest.raises(ModelNotFoundError):
        engine.load_adapter(d / "nope.gguf")
    with pytest.raises(AdapterFileError, match="regular file"):
        engine.load_adapter(d)


# ---- behaviour ------------------------------------------------------------------------------

def test_adapter_changes_output_and_scale_zero_is_the_base(engine, files):
    a = engine.load_adapter(files["a"])
    try:
        engine.set_adapters(None)
        base = _run(engine, PROMPT)
        engine.set_adapters(a)
        with_a = _run(engine, PROMPT)
        assert with_a != base, "a random LoRA on q/k/v/o of 4 layers did not change 16 greedy tokens"
        engine.set_adapters({a: 0.0})
        assert engine.active_adapters == {}
        assert _run(engine, PROMPT) == base
        engine.set_adapters({a: 2.0})
        assert engine.active_adapters == {a: 2.0}
        assert _run(engine, PROMPT) != with_a
    finally:
        engine.set_adapters(None)
        a.close()


def test_swap_between_requests_equals_fresh_engines(files):
    """One Engine swapping a -> b -> none -> a gives what a fresh Engine with that set gives."""
    with Engine(n_ctx=512, n_threads=1) as e:
        a, b = e.load_adapter(files["a"]), e.load_adapter(files["b"])
        got = {}
        for name, s in (("a", a), ("b", b), ("none", None), ("a2", a)):
            e.set_adapters(s)
            got[name] = _run(e, PROMPT)
        assert got["a"] == got["a2"]
    for name, path in (("a", files["a"]), ("b", files["b"]), ("none", None)):
        with Engine(n_ctx=512, n_threads=1, prefix_reuse=False) as f:
            if path:
                f.set_adapters(f.load_adapter(path))
            assert _run(f, PROMPT) == got[name], f"swapped-in {name} differs from a fresh Engine with it"
    with Engine(n_ctx=512, n_threads=1, adapters=[files["b"]]) as g:   # EngineOptions.adapters
        assert _run(g, PROMPT) == got["b"]
    with Engine(n_ctx=512, n_threads=1, adapters={files["a"]: 0.0}) as g:
        assert g.active_adapters == {} and _run(g, PROMPT) == got["none"]
    (files["dir"] / "empty-opt.gguf").write_bytes(b"")
    with pytest.raises(AdapterFileError):
        Engine(n_ctx=512, n_threads=1, adapters=str(files["dir"] / "empty-opt.gguf"))


def test_swap_mid_conversation_invalidates_the_prefix(files):
    with Engine(n_ctx=512, n_threads=1) as e:
        a, b = e.load_adapter(files["a"]), e.load_adapter(files["b"])
        e.set_adapters(a)
        _run(e, PROMPT)
        assert len(e.cached_tokens()) > 0
        e.set_adapters(a)                      # the same set: the cache stays
        assert len(e.cached_tokens()) > 0
        _run(e, TURN2)
        assert _reused(e) > 0, "the same adapter set must keep prefix reuse"
        e.set_adapters({a: 1.0, b: 0.0})       # b inactive: still the same effective set
        assert len(e.cached_tokens()) > 0
        e.set_adapters(b)                      # swap mid-conversation
        assert e.cached_tokens() == [], "K/V computed under adapter a survived a swap to b"
        turn2_b = _run(e, TURN2)
        assert _reused(e) == 0
        e.set_adapters({b: 0.5})               # a scale change is another set too
        assert e.cached_tokens() == []
    with Engine(n_ctx=512, n_threads=1, prefix_reuse=False) as f:
        f.set_adapters(f.load_adapter(files["b"]))
        assert _run(f, TURN2) == turn2_b


def test_state_files_record_the_adapter_set(files, tmp_path):
    state = tmp_path / "sys.festate"
    with Engine(n_ctx=512, n_threads=1) as e:
        a, b = e.load_adapter(files["a"]), e.load_adapter(files["b"])
        e.set_adapters(a)
        e.save_state(state, prompt=PROMPT)
        e.set_adapters(None)
        with pytest.raises(StateFileError, match="made with other LoRA adapters"):
            e.load_state(state)
        e.set_adapters(b)
        with pytest.raises(StateFileError, match="made with other LoRA adapters"):
            e.load_state(state)
        e.set_adapters({a: 0.5})
        with pytest.raises(StateFileError, match="made with other LoRA adapters"):
            e.load_state(state)
        e.set_adapters(a)
        assert e.load_state(state) > 0
        out = _run(e, TURN2)
        assert _reused(e) > 0
        e.set_adapters(None)
        e.save_state(tmp_path / "plain.festate", prompt=PROMPT)
        e.set_adapters(a)
        with pytest.raises(StateFileError, match="made with no adapter"):
            e.load_state(tmp_path / "plain.festate")
    with Engine(n_ctx=512, n_threads=1, prefix_reuse=False) as f:   # a copy of the adapter file: same sha256
        shutil.copy(files["a"], tmp_path / "copy.gguf")
        f.set_adapters(f.load_adapter(tmp_path / "copy.gguf"))
        assert _run(f, TURN2) == out


def test_bad_sets_are_refused(files):
    with Engine(n_ctx=256, n_threads=1) as e, Engine(n_ctx=256, n_threads=1) as other:
        a = e.load_adapter(files["a"])
        foreign = other.load_adapter(files["a"])
        for scale in (float("nan"), float("inf"), 101.0, -100.5):
            with pytest.raises(InvalidArgumentError, match="scale"):
                e.set_adapters({a: scale})
        with pytest.raises(InvalidArgumentError):
            e.set_adapters({a: "1"})
        with pytest.raises(InvalidArgumentError, match="not an adapter loaded by this Engine"):
            e.set_adapters(foreign)
        with pytest.raises(InvalidArgumentError, match="also adapter"):
            e.set_adapters([a, a])
        assert e.active_adapters == {}
        e.set_adapters(a)
        a.close()                               # released while active: still in use, then freed
        assert len(_run(e, PROMPT, 4)) == 4
        with pytest.raises(InvalidArgumentError, match="closed"):
            e.set_adapters(a)
        e.set_adapters(None)


def test_core_refuses_another_models_adapter_and_null_arguments(files):
    """The core's own checks, under the Python binding's (which would stop these first)."""
    import ctypes as C

    from finllm_edge import _native

    L = _native.lib()
    with Engine(n_ctx=256, n_threads=1) as e, Engine(n_ctx=256, n_threads=1) as other:
        foreign = other.load_adapter(files["a"])
        arr = (C.c_void_p * 1)(foreign._handle.value)
        one = (C.c_float * 1)(1.0)
        assert L.fe_session_set_adapters(e._session, arr, one, 1) == -1
        assert b"another model" in L.fe_last_error()
        assert L.fe_session_set_adapters(e._session, None, None, 1) == -1
        assert L.fe_session_set_adapters(None, None, None, 0) == -1
        assert L.fe_session_set_adapters(e._session, None, None, 0) == 0
        many = (C.c_void_p * 17)(*([foreign._handle.value] * 17))
        scales = (C.c_float * 17)(*([1.0] * 17))
        assert L.fe_session_set_adapters(e._session, many, scales, 17) == -1
        assert b"at most 16" in L.fe_last_error()
        out = C.c_void_p()
        assert L.fe_adapter_load(None, b"x.gguf", C.byref(out)) == -1 and not out.value
        assert L.fe_adapter_load(e._model, None, C.byref(out)) == -1
        assert L.fe_adapter_load(e._model, b"x.gguf", None) == -1
        L.fe_adapter_free(None)


def test_cli_run_with_adapters(files, capsys):
    from finllm_edge.lab import cli

    rc = cli.main(["run", "--no-chat", "-n", "8", "-t", "1", "--quiet-profile", "--adapter", f"{files['a']}:1.0",
                   "-p", PROMPT])
    assert rc == 0
    cli_text = capsys.readouterr().out.rstrip("\n")
    with Engine(n_ctx=2048, n_threads=1) as e:
        e.set_adapters(e.load_adapter(files["a"]))
        s = e.generate(PROMPT, max_tokens=8)
        assert cli_text == "".join(s)
    rc = cli.main(["run", "--no-chat", "-n", "2", "--adapter", str(files["dir"] / "missing.gguf"), "-p", "hi"])
    assert rc == 2 and "missing.gguf" in capsys.readouterr().err
    p = af.write_lora(files["dir"] / "cli-qwen2.gguf", files["factors"], arch="qwen2")
    rc = cli.main(["run", "--no-chat", "-n", "2", "--adapter", str(p), "-p", "hi"])
    assert rc == 2 and "architecture 'qwen2'" in capsys.readouterr().err
