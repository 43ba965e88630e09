"""The free-disk check counts the peak of the run, AWQ's intermediates included (scaled float32 folders, scaled
F16 GGUFs, llama-perplexity's KLD logits): measured peak <= estimate, and the estimate is not wildly above it."""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch  # noqa: E402,F401  (the convert extra: scripts/bootstrap.sh installs it; never skipped)

from convert_helpers import make_adapter, make_tiny_base, smollm2_tokenizer_dir  # noqa: E402
from finllm_edge_convert.checks import estimate_bytes  # noqa: E402
from finllm_edge_convert.pipeline import ConvertOptions, convert  # noqa: E402

pytestmark = [pytest.mark.convert, pytest.mark.slow]


def folder_bytes(root) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
            except OSError:
                pass
    return total


class PeakWatcher(threading.Thread):
    def __init__(self, root):
        super().__init__(daemon=True)
        self.root, self.peak, self.stop = root, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, folder_bytes(self.root))
            self.stop.wait(0.02)


def test_awq_estimate_covers_the_measured_peak(tmp_path, capsys):
    model = make_tiny_base(tmp_path / "base", "llama", smollm2_tokenizer_dir(), hidden=256)
    make_adapter(model, tmp_path / "lora")
    out = tmp_path / "out"
    watch = PeakWatcher(out)
    watch.start()
    try:
        res = convert(ConvertOptions(base=tmp_path / "base", lora=tmp_path / "lora", out=out, progress=False,
                                     quants=["q8_0", "q4_0"], awq=True, awq_grid=2, parity=False, eval_chunks=2,
                                     eval_ctx=128, task_passages=1))
    finally:
        watch.stop.set()
        watch.join()
    m = json.loads(res.manifest.read_text())
    est = m["disk_estimate_bytes"]
    old = estimate_bytes(m["n_params"], ["f16", "q8_0", "q4_0"])      # what the check used to count
    with capsys.disabled():
        print(f"\n  disk: estimate {est['total'] / 2**20:.1f} MiB, measured peak {watch.peak / 2**20:.1f} MiB, "
              f"final {folder_bytes(out) / 2**20:.1f} MiB, old estimate {old / 2**20:.1f} MiB; parts (MiB): "
              + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in est.items() if k != "total"))
    assert "awq scaled float32 folders" in est and "llama-perplexity KLD base logits (.work)" in est
    assert watch.peak <= est["total"] <= 2.0 * watch.peak
    assert old < watch.peak                                               # the old estimate under-counted
