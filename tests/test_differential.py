"""One core, every binding: the same GGUF, prompt, sampling settings and seed give the same tokens
from the Python Engine, the C API (fe-run, the step API and fe_generate), the JNI class on the
host JVM, and (greedy) the aarch64 build under qemu; chat prompts are the same bytes everywhere.

x86 builds of one CPU variant are compared with each other (the AVX-512 and AVX2 variants run
different matmul kernels, so their logits may differ in the last bits): the Engine runs in a
subprocess pinned to the variant the C and JNI builds use (FINLLM_EDGE_VARIANT).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finllm_edge.models import default_model_path
from finllm_edge.native.build import ensure_built

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "The three main risks of a leveraged buyout are"
QUESTION = "What does an EBITDA margin of 18% tell an investor?"
SAMPLED = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1, "seed": 1234}
N = 16

ENGINE_PROBE = r"""
import json, sys
from finllm_edge import _native
from finllm_edge.engine import Engine
model, prompt, question, n, sampled = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
out = {"variant": _native.lib().variant}
with Engine(model, n_threads=1, n_ctx=512) as e:
    out["greedy"] = e.complete(prompt, n).tokens
    out["sampled"] = e.complete(prompt, n, **sampled).tokens
    s = e.chat([{"role": "user", "content": question}], n)
    list(s)
    out["chat_greedy"] = s.tokens
    out["chat_prompt"] = e.format_chat([{"role": "user", "content": question}])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def host():
    return ensure_built("host")


@pytest.fixture(scope="module")
def model() -> Path:
    return default_model_path()


def fe_run(exe: Path, model: Path, prompt: str, *extra: str, runner: tuple[str, ...] = ()) -> dict:
    res = subprocess.run([*runner, str(exe), "-m", str(model), "-p", prompt, "-n", str(N), "-t", "1", "-c", "512",
                          *extra], capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def sampled_flags() -> list[str]:
    s = SAMPLED
    return ["--temp", str(s["temperature"]), "--top-k", str(s["top_k"]), "--top-p", str(s["top_p"]),
            "--repeat-penalty", str(s["repeat_penalty"]), "--seed", str(s["seed"])]


@pytest.fixture(scope="module")
def engine_side(host, model) -> dict:
    env = dict(os.environ, FINLLM_EDGE_VARIANT=host.variant)
    res = subprocess.run([sys.executable, "-c", ENGINE_PROBE, str(model), PROMPT, QUESTION, str(N),
                          json.dumps(SAMPLED)], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["variant"] == host.variant
    return out


@pytest.fixture(scope="module")
def c_side(host, model) -> dict:
    exe = host.build_dir / "bin" / "fe-run"
    return {
        "greedy": fe_run(exe, model, PROMPT),
        "sampled": fe_run(exe, model, PROMPT, *sampled_flags()),
        "chat": fe_run(exe, model, QUESTION, "--chat"),
    }


@pytest.mark.slow
@pytest.mark.native
def test_engine_and_c_api_give_the_same_tokens(engine_side, c_side):
    assert len(engine_side["greedy"]) == N
    assert engine_side["greedy"] == c_side["greedy"]["tokens"]
    assert engine_side["sampled"] == c_side["sampled"]["tokens"]
    assert engine_side["sampled"] != engine_side["greedy"]  # the settings really sample
    assert engine_side["chat_greedy"] == c_side["chat"]["tokens"]
    assert engine_side["chat_prompt"].encode() == c_side["chat"]["chat_prompt"].encode()


@pytest.mark.slow
@pytest.mark.native
def test_jni_class_gives_the_same_tokens_and_chat_bytes(engine_side, host, model, tmp_path):
    import test_jni as tj

    lib = tj._find_lib(host.build_dir, "finllm_jni")
    classes = tmp_path / "classes"
    res = tj._run([tj._jdk_tool("javac"), "--release", "11", "-encoding", "UTF-8", "-d", classes, *tj.JAVA_SOURCES,
                   ROOT / "tests" / "jvm" / "FinLlmProbe.java"], timeout=300)
    assert res.returncode == 0, res.stderr
    got = {}
    for mode in ("greedy", "sampled"):
        res = tj._run([tj._jdk_tool("java"), "-Xcheck:jni", f"-Djava.library.path={lib.parent}", "-cp", classes,
                       "FinLlmProbe", model, mode, PROMPT, str(N)], timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        lines = dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)
        got[mode] = [int(t) for t in lines["TOKENS"].split(",")]
        got["chat"] = bytes.fromhex(lines["CHAT"].strip()).decode()
    assert got["greedy"] == engine_side["greedy"]
    assert got["sampled"] == engine_side["sampled"]
    # JNI's formatChat(null, user) renders one user message, as the Engine does.
    assert got["chat"] == engine_side["chat_prompt"].replace(QUESTION, PROMPT)


@pytest.mark.slow
@pytest.mark.native
@pytest.mark.emulated
def test_aarch64_build_under_qemu_gives_the_same_greedy_tokens(c_side, model):
    arm = ensure_built("linux-aarch64-dotprod")
    n = 8  # ~1-3 s per token under emulation
    res = subprocess.run(["qemu-aarch64", "-cpu", "cortex-a76", str(arm.build_dir / "bin" / "fe-run"),
                          "-m", str(model), "-p", PROMPT, "-n", str(n), "-t", "1", "-c", "512"],
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["variant"] == "armv8.2-a+dotprod+fp16"
    assert out["tokens"] == c_side["greedy"]["tokens"][:n]
