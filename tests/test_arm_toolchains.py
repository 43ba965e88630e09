"""The CMake toolchain files for ARM: the android-arm64 one fails clearly without the NDK.

The NDK is not installed on finllm-edge build machines, so nothing is built with it here;
what is tested is that a user without it gets a message saying what to do, not a confusing
compiler error. (The aarch64-linux-gnu toolchain is exercised by every build in
test_arm_emulated.py.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ANDROID_TC = REPO / "cmake" / "toolchains" / "android-arm64.cmake"


def _configure(tmp_path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["cmake", "-S", str(REPO / "native" / "dispatch"), "-B", str(tmp_path / "b"), "-G", "Ninja",
                           f"-DCMAKE_TOOLCHAIN_FILE={ANDROID_TC}", *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("ndk", [None, "empty-dir"])
def test_android_toolchain_without_ndk_says_what_to_do(tmp_path, ndk):
    env = {k: v for k, v in os.environ.items() if k not in ("ANDROID_NDK", "ANDROID_NDK_HOME")}
    if ndk:
        (tmp_path / ndk).mkdir()
        env["ANDROID_NDK"] = str(tmp_path / ndk)
    proc = _configure(tmp_path, env)
    assert proc.returncode != 0
    assert "the Android NDK was not found" in proc.stderr
    assert "export ANDROID_NDK=" in proc.stderr


def test_android_toolchain_states_abi_api_and_variants():
    text = ANDROID_TC.read_text()
    assert 'set(ANDROID_ABI "arm64-v8a"' in text
    assert 'set(ANDROID_PLATFORM "android-28"' in text
    for v in ("armv8.2-a+dotprod+fp16", "armv8-a"):
        assert v in text
