"""`finllm-edge device bench` end to end: the fake adb runs the real aarch64 fe-bench under qemu.

Each phone is a sandbox folder (tests/fake_adb/); only the executable at the far end of adb is
replaced. The workload is tiny (a 2-layer GGUF with SmolLM2's tokenizer, -p 8 -n 4, one
repetition) so the whole file stays within a couple of minutes once the aarch64 builds exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fake_adb"))
import phones

from finllm_edge.cpu_variant import VARIANT_BASE, VARIANT_DOTPROD
from finllm_edge.lab.device import bench_devices
from finllm_edge.lab.device.adb import Adb
from finllm_edge.lab.device.bench import BenchOptions, fe_bench_for
from finllm_edge.lab.tiny_llama import Shape, copy_tokenizer, write_random_llama
from finllm_edge.profile import load_profiles, validate_profile

pytestmark = pytest.mark.emulated
REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts" / "device"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from finllm_edge.models import default_model_path

    # 2 layers of width 64, SmolLM2's tokenizer (prompts tokenize as with the real model), Q4_0 block
    # matrices (what llama.cpp repacks for dotprod at load): seconds under qemu instead of minutes
    return write_random_llama(tmp_path_factory.mktemp("model") / "tiny-llama-q4_0.gguf", Shape(n_ctx=512),
                              tokenizer=copy_tokenizer(default_model_path()), matrices="Q4_0", embedding="Q8_0",
                              weight_std=0.05)


@pytest.fixture(scope="module")
def builds() -> dict:
    """Both aarch64 fe-bench variants (built once into the shared cache, then a ninja no-op)."""
    return {v: fe_bench_for(v) for v in (VARIANT_DOTPROD, VARIANT_BASE)}


@pytest.fixture
def fake(tmp_path, monkeypatch):
    def install(*devices):
        env = phones.write_config(tmp_path, list(devices))
        monkeypatch.setenv("PATH", env["PATH"])
        monkeypatch.setenv("FAKE_ADB_CONFIG", env["FAKE_ADB_CONFIG"])
        monkeypatch.delenv("ANDROID_SERIAL", raising=False)
        return env

    return install


def _opts(model: Path, threads: list[int], **kw) -> BenchOptions:
    base = dict(model=model, threads=threads, n_prompt=8, n_gen=4, repetitions=1, warmup=0,
                cool_poll_s=0.05, cool_timeout_s=20.0, run_timeout_s=600)
    base.update(kw)
    return BenchOptions(**base)


def _masks(root: Path) -> list[str]:
    log = root / ".fake" / "taskset.log"
    return [json.loads(line)["mask"] for line in log.read_text().splitlines()] if log.exists() else []


def test_sd865_phone_dotprod_sweep_thermal_and_estimate(fake, tmp_path, tiny_model, builds):
    fake(phones.sd865("SD865A"))
    out = tmp_path / "out"
    merged = bench_devices(Adb(), None, _opts(tiny_model, [1, 2]), out)
    dev = merged["devices"]["SD865A"]
    assert dev["complete"], dev["error"]
    assert dev["variant"] == VARIANT_DOTPROD
    rep = json.loads((out / "SD865A" / "report.json").read_text())
    assert "asimddp=yes" in rep["variant_reason"]
    assert rep["pinning"]["mask"] == "f0" and rep["pinning"]["big_cores"] == [4, 5, 6, 7]
    assert _masks(tmp_path / "phones" / "SD865A") == ["f0", "f0"]  # taskset really received the mask
    # both runs measured, validated, on disk and in the merged file `finllm-edge report` reads
    assert [p["n_threads"] for p in rep["profiles"]] == [1, 2]
    for run, prof in zip(rep["runs"], rep["profiles"]):
        validate_profile(prof)
        assert (out / "SD865A" / run["profile"]).is_file()
        assert prof["variant"] == VARIANT_DOTPROD and prof["tool"] == "fe-bench"
        assert prof["emulated"] is True  # the fake says ro.boot.qemu=1: never quoted as phone speed
        assert prof["n_prompt"] == 8 and prof["n_gen"] == 4 and prof["decode_tok_s"] > 0
        assert prof["thermal"]["taskset_mask"] == "f0"
        assert prof["device"]["max_freq_khz"]["7"] == 2841600
        assert "SM8250" in prof["device"]["cpu_model"]
        th = prof["thermal"]
        for side in ("before", "after"):
            assert th[side]["temps_c"]["thermal_zone2:cpu-1-0-usr"] > 20
            assert th[side]["cur_freq_khz"]["7"] > 0 and th[side]["cpuinfo_max_freq_khz"]["7"] == 2841600
        assert th["after"]["cpu_temp_c"] > th["before"]["cpu_temp_c"]  # the fake phone heats per run
        assert th["throttled"] is False
    # the second run waited (bounded) for the phone to cool back near its starting temperature
    cool = rep["runs"][1]["cooldown"]
    assert cool["reached"] is True and cool["polls"] >= 2 and cool["end_c"] <= cool["start_c"] + 3.0
    # the Snapdragon 865 estimate sits beside the measurement, labelled as an estimate
    assert rep["estimate"]["available"] and set(rep["estimate"]["by_threads"]) == {"1", "2"}
    assert all(e["kind"] == "estimate" and e["device"] == "snapdragon-865" for e in rep["estimates"])
    assert "measured_over_estimate_decode_tok_s" in rep["summary"][0]
    assert "SD865 estimate" in (out / "SD865A" / "summary.md").read_text()
    assert len(load_profiles(out / "report.json")) == 2
    # pushed once; a second bench skips both files by sha256
    assert [p["skipped"] for p in rep["pushed"]] == [False, False]
    again = bench_devices(Adb(), ["SD865A"], _opts(tiny_model, [1]), tmp_path / "again")
    rep2 = json.loads(Path(again["devices"]["SD865A"]["report"]).read_text())
    assert [p["skipped"] for p in rep2["pushed"]] == [True, True] and rep2["complete"]
    # `finllm-edge report` renders the merged file (Markdown + PNGs)
    proc = subprocess.run([sys.executable, "-m", "finllm_edge.lab.cli", "report", str(out / "report.json"),
                           "-o", str(out / "rendered")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    md = (out / "rendered" / "report.md").read_text()
    assert "SM8250" in md and "ESTIMATE" in md.upper() and "EMULATED" in md


def test_armv8_0_phone_gets_the_baseline(fake, tmp_path, tiny_model, builds):
    fake(phones.armv8_0("A53B"))
    merged = bench_devices(Adb(), ["A53B"], _opts(tiny_model, [2]), tmp_path / "out")
    dev = merged["devices"]["A53B"]
    assert dev["complete"], dev["error"]
    assert dev["variant"] == VARIANT_BASE and dev["estimate"] is None  # not an SD865: no estimate
    prof = merged["profiles"][0]
    validate_profile(prof)
    assert prof["variant"] == VARIANT_BASE and prof["n_threads"] == 2
    assert _masks(tmp_path / "phones" / "A53B") == ["f"]  # the 2.0 GHz cluster, cpu0-3
    pushed = sorted(p.name for p in (tmp_path / "phones/A53B/data/local/tmp/finllm-edge").iterdir() if p.is_file())
    assert pushed == ["fe-bench-armv8-a", "tiny-llama-q4_0.gguf"]


def test_two_phones_in_parallel_each_with_own_log_and_results(fake, tmp_path, tiny_model, builds):
    fake(phones.sd865("P1"), phones.armv8_0("P2"))
    out = tmp_path / "out"
    merged = bench_devices(Adb(), None, _opts(tiny_model, [1]), out)
    assert {s: d["complete"] for s, d in merged["devices"].items()} == {"P1": True, "P2": True}
    assert {s: d["variant"] for s, d in merged["devices"].items()} == {"P1": VARIANT_DOTPROD, "P2": VARIANT_BASE}
    assert len(merged["profiles"]) == 2
    for s in ("P1", "P2"):
        log = (out / s / "bench.log").read_text()
        assert f"{s}-run0-t1.json" in log and ("P1" if s == "P2" else "P2") + "-run0" not in log
        assert (out / s / "profiles" / "run0-t1.json").is_file()
    # the phones were driven concurrently: each one's adb session (first to last shell call)
    # overlaps the other's; one after the other, they could not
    spans = []
    for s in ("P1", "P2"):
        calls = [e for e in phones.shell_log(tmp_path / "phones" / s) if e["op"] == "shell"]
        assert sum(1 for e in calls if e["qemu"]) == 1
        spans.append((min(e["t0"] for e in calls), max(e["t1"] for e in calls)))
    assert max(a for a, _ in spans) < min(b for _, b in spans)


def test_sigill_when_forcing_dotprod_on_armv8_0(fake, tmp_path, tiny_model, builds):
    fake(phones.armv8_0("OLD"))
    merged = bench_devices(Adb(), ["OLD"], _opts(tiny_model, [1], variant=VARIANT_DOTPROD), tmp_path / "out")
    dev = merged["devices"]["OLD"]
    assert dev["complete"] is False and dev["error_type"] == "BenchmarkCrashError"
    assert "SIGILL" in dev["error"] and VARIANT_DOTPROD in dev["error"] and f"--variant {VARIANT_BASE}" in dev["error"]
    rep = json.loads((tmp_path / "out" / "OLD" / "report.json").read_text())
    assert rep["runs"][0]["exit_code"] == 132 and rep["profiles"] == []
    assert "forced with --variant" in rep["variant_reason"] and VARIANT_BASE in rep["variant_reason"]


def test_disconnect_mid_run_keeps_what_was_measured(fake, tmp_path, tiny_model, builds):
    fake(phones.sd865("FLAKY", disconnect_on_run=2))  # the cable goes 0.5 s into the second run
    out = tmp_path / "out"
    merged = bench_devices(Adb(), ["FLAKY"], _opts(tiny_model, [1, 2, 4]), out)
    dev = merged["devices"]["FLAKY"]
    assert dev["complete"] is False and dev["error_type"] == "DeviceDisconnectedError"
    assert "results measured so far are kept" in dev["error"] and "during run 1 (fe-bench, 2 threads)" in dev["error"]
    rep = json.loads((out / "FLAKY" / "report.json").read_text())
    assert [p["n_threads"] for p in rep["profiles"]] == [1]
    validate_profile(rep["profiles"][0])
    assert (out / "FLAKY" / "profiles" / "run0-t1.json").is_file()
    assert len(load_profiles(out / "report.json")) == 1
    assert "DeviceDisconnectedError" in (out / "FLAKY" / "bench.log").read_text()


def test_plain_scripts_push_run_pull(fake, tmp_path, tiny_model, builds):
    env = fake(phones.sd865("S1"))
    bindir = tmp_path / "bundle-bin"
    bindir.mkdir()
    for v, path in builds.items():
        os.symlink(path, bindir / f"fe-bench-{v}")
    env = {**env, "RESULTS": str(tmp_path / "res")}

    def run(*a):
        return subprocess.run(["sh", *map(str, a)], capture_output=True, text=True, env=env, cwd=tmp_path)

    push = run(SCRIPTS / "push.sh", bindir, tiny_model)
    assert push.returncode == 0, push.stderr
    assert f"variant={VARIANT_DOTPROD}" in push.stdout and "pushed tiny-llama-q4_0.gguf" in push.stdout
    again = run(SCRIPTS / "push.sh", bindir, tiny_model)
    assert "skip tiny-llama-q4_0.gguf" in again.stdout
    go = run(SCRIPTS / "run.sh", VARIANT_DOTPROD, tiny_model.name, 2, "-p", 8, "-n", 4, "-r", 1, "--warmup", 0)
    assert go.returncode == 0, go.stdout + go.stderr
    assert "taskset f0" in go.stdout
    note = (tmp_path / "res" / "t2.thermal.txt").read_text()
    assert "# before" in note and "# after (fe-bench exit 0)" in note and "cpu-1-0-usr" in note
    pull = run(SCRIPTS / "pull.sh")
    assert pull.returncode == 0, pull.stderr
    prof = json.loads((tmp_path / "res" / "t2.json").read_text())
    validate_profile(prof)
    assert prof["n_threads"] == 2 and prof["variant"] == VARIANT_DOTPROD and prof["emulated"] is True
