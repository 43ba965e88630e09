"""Crash-safe conversion: SIGKILL at seeded random moments and a file-size limit (disk full)
leave nothing that looks finished, give a clear error, and a rerun succeeds."""

from __future__ import annotations

import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convert_helpers import make_adapter, make_tiny_base, smollm2_tokenizer_dir

pytestmark = [pytest.mark.convert, pytest.mark.slow]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    model = make_tiny_base(root / "base", "llama", smollm2_tokenizer_dir())
    make_adapter(model, root / "lora")
    return root / "base", root / "lora"


def convert_cmd(base, lora, out):
    return [sys.executable, "-m", "finllm_edge.lab.cli", "convert", "--base", str(base), "--lora", str(lora),
            "--out", str(out), "--quant", "q8_0", "--no-parity", "--no-cross-check", "--no-progress",
            "--eval-chunks", "1", "--task-passages", "1"]


def looks_finished(out: Path) -> list[str]:
    return [p.name for p in out.rglob("*") if p.is_file() and ".partial-" not in p.name
            and p.suffix in (".gguf", ".json", ".safetensors")]


def test_sigkill_at_random_moments_then_rerun(inputs, tmp_path):
    base, lora = inputs
    rng = random.Random(20261128)
    out = tmp_path / "out"
    for delay in sorted(rng.uniform(1.0, 12.0) for _ in range(3)):
        proc = subprocess.Popen(convert_cmd(base, lora, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=300)
        if proc.returncode == 0:
            continue  # it finished before the kill: a complete run is fine too
        assert proc.returncode == -9
        assert not (out / "manifest.json").exists(), f"killed after {delay:.1f}s but manifest.json exists"
        assert not (out / "quality.json").exists()
    done = subprocess.run(convert_cmd(base, lora, out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "manifest.json").exists() and not list(out.rglob("*.partial-*"))


def _limit_fsize():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))


def test_disk_full_gives_a_clear_error_and_leaves_nothing_finished(inputs, tmp_path):
    base, lora = inputs
    out = tmp_path / "out"
    proc = subprocess.run(convert_cmd(base, lora, out), capture_output=True, text=True, timeout=600,
                          preexec_fn=_limit_fsize)
    assert proc.returncode == 2, proc.stderr[-2000:]          # InsufficientDiskError is an OSError: exit 2
    assert "no room to write" in proc.stderr and "Traceback" not in proc.stderr
    assert [n for n in looks_finished(out) if n.endswith((".gguf", ".safetensors"))] == []
    assert not (out / "manifest.json").exists()
    done = subprocess.run(convert_cmd(base, lora, out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "manifest.json").exists()
