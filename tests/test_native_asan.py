"""ASan + UBSan build of the C API and its C tests (llama.cpp itself stays unsanitized).

Any sanitizer report (heap overflow, use after free, leak, undefined behaviour) makes the
C test process exit nonzero, so ctest fails.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from finllm_edge.native.build import ensure_built

pytestmark = [pytest.mark.native, pytest.mark.slow]


def test_c_tests_pass_under_asan_and_ubsan():
    info = ensure_built("host-asan")
    out = subprocess.run(["nm", str(info.lib_shared)], capture_output=True, text=True).stdout
    assert "__asan_" in out and "__ubsan_" in out  # really instrumented
    env = os.environ | info.env
    proc = subprocess.run(["ctest", "--test-dir", str(info.ctest_dir), "--output-on-failure"],
                          capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert "100% tests passed" in proc.stdout
    assert "ERROR: AddressSanitizer" not in proc.stdout + proc.stderr
    assert "runtime error:" not in proc.stdout + proc.stderr
