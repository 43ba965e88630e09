"""io.finllm.edge.FinLlmScheduler (the core's scheduler through JNI) on the host JVM: concurrent
requests equal their solo runs, cancel of one leaves the others intact, a full queue throws
FinLlmException(FE_ERR_BUSY), bad parameters throw naming the field, close() while requests run
ends them. tests/jvm/FinLlmSchedulerTest.java does the checks; the library and the Java sources
are the ones tests/test_jni.py uses."""

from __future__ import annotations

import re

import pytest

from finllm_edge.models import default_model_path
from test_jni import JAVA_SOURCES, ROOT, _jdk_tool, _run, host_jni_lib  # noqa: F401 - fixture

JVM_TEST = ROOT / "tests" / "jvm" / "FinLlmSchedulerTest.java"
EXPECTED = ["concurrent_requests_equal_solo_and_cancel", "reuse_generated_keeps_the_answer",
            "queue_full_throws_busy_and_bad_params_throw",
            "close_while_running_ends_requests"]


@pytest.mark.native
@pytest.mark.slow
def test_scheduler_on_desktop_jvm(host_jni_lib, tmp_path):  # noqa: F811 - the fixture
    res = _run([_jdk_tool("javac"), "--release", "11", "-Xlint:all", "-Werror", "-encoding", "UTF-8",
                "-d", tmp_path, *JAVA_SOURCES, JVM_TEST], timeout=300)
    assert res.returncode == 0, f"javac failed:\n{res.stdout}\n{res.stderr}"
    res = _run([_jdk_tool("java"), "-Xcheck:jni", f"-Djava.library.path={host_jni_lib.parent}",
                "-cp", tmp_path, "FinLlmSchedulerTest", default_model_path()], timeout=900)
    out = res.stdout
    assert res.returncode == 0, f"FinLlmSchedulerTest failed ({res.returncode}):\n{out[-6000:]}\n{res.stderr[-3000:]}"
    assert re.findall(r"^PASS (\w+)$", out, re.M) == EXPECTED
    assert "ALL PASSED" in out
    assert "WARNING in native method" not in out + res.stderr, res.stderr[-3000:]
