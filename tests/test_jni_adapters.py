"""FinLlm.loadAdapter / setAdapters on the host JVM (tests/jvm/FinLlmAdapterTest.java) over the JNI
bridge: swap, clear, prefix invalidation, bad sets and hostile files throw FinLlmException; the
greedy tokens of each adapter set equal the Python Engine's (one core under both bindings)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from finllm_edge.models import default_model_path
from finllm_edge.native.build import ensure_built

sys.path.insert(0, str(Path(__file__).resolve().parent))
import adapter_files as af  # noqa: E402
from test_jni import JAVA_SOURCES, ROOT, _find_lib, _jdk_tool, _run  # noqa: E402

pytestmark = [pytest.mark.native, pytest.mark.slow]
ADAPTER_TEST = ROOT / "tests" / "jvm" / "FinLlmAdapterTest.java"
PROMPT = "The debt-to-equity ratio of a bank measures"   # FinLlmAdapterTest.PROMPT


def test_adapters_through_jni_match_python(tmp_path):
    info = ensure_built("host")
    lib = _find_lib(info.build_dir, "finllm_jni")
    classes = tmp_path / "classes"
    res = _run([_jdk_tool("javac"), "--release", "11", "-Xlint:all", "-Werror", "-encoding", "UTF-8", "-d", classes,
                *JAVA_SOURCES, ADAPTER_TEST], timeout=300)
    assert res.returncode == 0, f"javac failed:\n{res.stdout}\n{res.stderr}"
    base = default_model_path()
    a = af.write_lora(tmp_path / "a.gguf", af.random_lora(base, seed=1))
    b = af.write_lora(tmp_path / "b.gguf", af.random_lora(base, seed=2, targets=("attn_v", "attn_output")))
    foreign = af.write_lora(tmp_path / "qwen2.gguf", af.random_lora(base, seed=3), arch="qwen2")
    res = _run([_jdk_tool("java"), "-Xcheck:jni", f"-Djava.library.path={lib.parent}", "-cp", classes,
                "FinLlmAdapterTest", base, a, b, foreign], timeout=600)
    out = res.stdout
    assert res.returncode == 0, f"FinLlmAdapterTest failed ({res.returncode}):\n{out[-4000:]}\n{res.stderr[-2000:]}"
    assert out.count("PASS ") == 4 and "ALL PASSED" in out, out[-3000:]
    assert "WARNING in native method" not in out + res.stderr, res.stderr[-3000:]
    found = re.finditer(r"^TOKENS (\w+) ([\d,]+)$", out, re.M)
    java = {m.group(1): [int(x) for x in m.group(2).split(",")] for m in found}
    # the Python side on the JNI library's CPU variant (kernels of another variant round differently)
    code = ("import json, sys\nfrom finllm_edge.engine import Engine\n"
            "base, a, b, prompt = sys.argv[1:5]\nout = {}\n"
            "with Engine(base, n_ctx=512, n_threads=1) as e:\n"
            "    for name, path in (('none', None), ('a', a), ('b', b)):\n"
            "        e.set_adapters(e.load_adapter(path) if path else None)\n"
            "        s = e.generate(prompt, max_tokens=16)\n"
            "        list(s)\n"
            "        out[name] = s.tokens\n"
            "print(json.dumps(out))\n")
    env = dict(os.environ, FINLLM_EDGE_VARIANT=info.variant)
    res = _run([sys.executable, "-c", code, base, a, b, PROMPT], timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    python = json.loads(res.stdout.strip().splitlines()[-1])
    assert python == java, f"JNI {java} vs Python {python}"
