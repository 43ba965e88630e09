"""`finllm-edge device`: parsing, typed errors and pushes against the fake adb (no emulation).

The emulated end-to-end benches (fe-bench under qemu behind the fake adb) are in
test_device_emulated.py.
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

from finllm_edge.lab.device import adb as adbmod
from finllm_edge.lab.device import bench as benchmod
from finllm_edge.lab.device import info as infomod
from finllm_edge.lab.device.adb import (
    Adb,
    AdbNotFoundError,
    DeviceDisconnectedError,
    DeviceOfflineError,
    DeviceUnauthorizedError,
    NoDeviceError,
    NotEnoughSpaceError,
    PushFailedError,
    WrongAbiError,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Install fake phones: fake(sd865('A'), ...) -> env (PATH and config also set in os.environ)."""

    def install(*devices):
        env = phones.write_config(tmp_path, list(devices))
        monkeypatch.setenv("PATH", env["PATH"])
        monkeypatch.setenv("FAKE_ADB_CONFIG", env["FAKE_ADB_CONFIG"])
        monkeypatch.delenv("ANDROID_SERIAL", raising=False)
        monkeypatch.delenv("FINLLM_EDGE_ADB", raising=False)
        return env

    return install


def _opts(tmp_path, model: Path, fe_bench: Path, **kw) -> benchmod.BenchOptions:
    return benchmod.BenchOptions(model=model, fe_bench=fe_bench, threads=[1], n_prompt=8, n_gen=4,
                                 repetitions=1, warmup=0, cool_poll_s=0.01, cool_timeout_s=2, **kw)


def _files(tmp_path, model_bytes: int = 3 << 20) -> tuple[Path, Path]:
    model = tmp_path / "m.gguf"
    model.write_bytes(os.urandom(model_bytes))
    exe = tmp_path / "fe-bench-x"
    exe.write_bytes(b"#!/bin/sh\necho not-run\n")
    exe.chmod(0o755)
    return model, exe


# --- parsing -------------------------------------------------------------------------------

def test_parse_devices_long_and_short_forms():
    text = ("* daemon not running; starting now at tcp:5037\n* daemon started successfully\n"
            "List of devices attached\n"
            "R58N12345AB            device usb:1-1 product:x1sxxx model:SM_G981B device:x1s transport_id:1\n"
            "192.168.1.7:5555       offline transport_id:3\n"
            "emulator-5554\tunauthorized\n"
            "0123456789ABCDEF       no permissions (user in plugdev group; are your udev rules wrong?); see ...\n\n")
    got = adbmod.parse_devices(text)
    assert [(d.serial, d.state) for d in got] == [
        ("R58N12345AB", "device"), ("192.168.1.7:5555", "offline"),
        ("emulator-5554", "unauthorized"), ("0123456789ABCDEF", "no permissions")]
    assert got[0].model == "SM_G981B" and got[0].details["transport_id"] == "1"


def test_parse_df_toybox_coreutils_and_wrapped():
    toybox = ("Filesystem      1K-blocks     Used Available Use% Mounted on\n"
              "/dev/block/dm-8 110511436 70511436  40000000  64% /data\n")
    assert infomod.parse_df(toybox) == 40000000 * 1024
    wrapped = ("Filesystem 1K-blocks Used Available Use% Mounted on\n"
               "/dev/block/bootdevice/by-name/userdata\n      110511436 70511436 1234 99% /data\n")
    assert infomod.parse_df(wrapped) == 1234 * 1024
    assert infomod.parse_df("df: /x: No such file or directory\n") is None


def test_snapshot_parsing_units_and_cpu_temp():
    text = ("@T thermal_zone0 aoss0-usr 33000\n@T thermal_zone1 cpu-1-0-usr 61500\n"
            "@T thermal_zone2 battery 30\n@T thermal_zone3 bogus \n"
            "@F 0 1171200 1804800 1804800 schedutil\n@F 7 1996800 1996800 2841600 schedutil\n"
            "@F 8 - - - -\n")
    snap = infomod.parse_snapshot(text)
    assert snap["temps_c"] == {"thermal_zone0:aoss0-usr": 33.0, "thermal_zone1:cpu-1-0-usr": 61.5,
                               "thermal_zone2:battery": 30.0}
    assert snap["scaling_max_freq_khz"]["7"] == 1996800 and snap["cpuinfo_max_freq_khz"]["7"] == 2841600
    assert "8" not in snap["cur_freq_khz"]
    assert infomod.cpu_temp(snap) == 61.5  # the CPU zone, not the hottest of all
    assert infomod.cpu_temp({"temps_c": {"z:battery": 31.0, "z:weird": 900.0}}) == 31.0


def test_core_mask_threads_and_big_cores():
    assert infomod.core_mask([4, 5, 6, 7]) == "f0"
    assert infomod.core_mask([0, 1, 2, 3]) == "f"
    assert benchmod.default_threads(4) == [1, 2, 4]
    assert benchmod.default_threads(3) == [1, 2, 3]
    assert benchmod.default_threads(1) == [1]
    sd = infomod.parse_info("x", "@F 0 1 1 1804800 s\n@F 1 1 1 1804800 s\n@F 2 1 1 2419200 s\n@F 3 1 1 2841600 s\n")
    assert sd.big_cores == [2, 3]
    assert sd.clusters[0] == {"max_freq_khz": 2841600, "cpus": [3]}


def test_sigill_error_names_variant_and_suggests_baseline():
    err = benchmod._crash_error(132, "qemu: uncaught target signal 4 (Illegal instruction)",
                                "armv8.2-a+dotprod+fp16", "PHONE", 4)
    assert err.returncode == 132 and err.variant == "armv8.2-a+dotprod+fp16"
    assert "SIGILL" in str(err) and "armv8.2-a+dotprod+fp16" in str(err) and "--variant armv8-a" in str(err)
    seg = benchmod._crash_error(139, "Segmentation fault", "armv8-a", "PHONE", 1)
    assert "SIGSEGV" in str(seg) and "--variant" not in str(seg)


# --- adb errors ------------------------------------------------------------------------------

def test_no_adb_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no adb anywhere
    monkeypatch.delenv("FINLLM_EDGE_ADB", raising=False)
    with pytest.raises(AdbNotFoundError, match="apt-get install adb"):
        Adb()
    proc = subprocess.run([sys.executable, "-m", "finllm_edge.lab.cli", "device", "list"],
                          capture_output=True, text=True, env={**os.environ, "PATH": str(tmp_path)}, cwd=REPO)
    assert proc.returncode == 1
    assert "`adb` is not on PATH" in proc.stderr


def test_no_device(fake):
    fake()
    with pytest.raises(NoDeviceError, match="USB debugging"):
        Adb().resolve(None)
    with pytest.raises(NoDeviceError, match="NOPE"):
        Adb().resolve(["NOPE"])


def test_cli_bench_without_a_device_and_with_a_locked_one(fake, tmp_path):
    model, exe = _files(tmp_path, 1024)
    env = fake()
    cmd = [sys.executable, "-m", "finllm_edge.lab.cli", "device", "bench", str(model), "--fe-bench", str(exe),
           "-o", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 1 and "no device attached" in proc.stderr
    env = fake(phones.sd865("LOCKED", state="unauthorized"))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 1
    assert "LOCKED: DeviceUnauthorizedError" in proc.stderr and "Allow USB debugging" in proc.stderr
    merged = json.loads((tmp_path / "out" / "report.json").read_text())
    assert merged["devices"]["LOCKED"]["complete"] is False and merged["profiles"] == []


def test_list_and_info_over_fake(fake):
    env = fake(phones.sd865("SD865A"), phones.armv8_0("A53B"), phones.sd865("LOCKED", state="unauthorized"))
    adb = Adb()
    assert [(d.serial, d.state) for d in adb.devices()] == [
        ("SD865A", "device"), ("A53B", "device"), ("LOCKED", "unauthorized")]
    sd = infomod.read_info(adb.device("SD865A"))
    assert sd.abi == "arm64-v8a" and sd.is_sd865 and sd.is_emulator
    assert {"asimddp", "fphp", "asimdhp"} <= set(sd.features)
    assert sd.big_cores == [4, 5, 6, 7] and sd.clusters[0]["cpus"] == [7]
    assert sd.mem_total_mb == pytest.approx(7619.2, abs=0.1)
    assert sd.free_bytes == 40_000_000 * 1024
    assert sd.thermal_zones["thermal_zone2:cpu-1-0-usr"] == 35.0
    old = infomod.read_info(adb.device("A53B"))
    assert "asimddp" not in old.features and not old.is_sd865 and old.big_cores == [0, 1, 2, 3]
    # the CLI: both phones printed, the unauthorized one named with what to do, exit 1
    proc = subprocess.run([sys.executable, "-m", "finllm_edge.lab.cli", "device", "info"], capture_output=True,
                          text=True, env=env, cwd=REPO)
    assert proc.returncode == 1
    assert "SD865A: samsung SM-G981B" in proc.stdout and "taskset mask f0" in proc.stdout
    assert "A53B" in proc.stdout and "dotprod(asimddp)=no" in proc.stdout
    assert "DeviceUnauthorizedError: LOCKED" in proc.stderr and "Allow USB debugging" in proc.stderr
    # the real commands went through: getprop, /proc/cpuinfo, df, sysfs
    log_dir = Path(os.environ["FAKE_ADB_CONFIG"]).parent / "phones" / "SD865A"
    cmds = " ".join(e["cmd"] for e in phones.shell_log(log_dir))
    for needle in ("getprop $p", "ro.product.cpu.abi", "cat /proc/cpuinfo", "df -k /data/local/tmp/finllm-edge",
                   "/sys/class/thermal/thermal_zone*", "cpufreq/cpuinfo_max_freq"):
        assert needle in cmds


def test_unauthorized_and_offline_bench(fake, tmp_path):
    fake(phones.sd865("LOCKED", state="unauthorized"), phones.sd865("GONE", state="offline"))
    model, exe = _files(tmp_path, 1024)
    from finllm_edge.lab.device import bench_devices

    merged = bench_devices(Adb(), None, _opts(tmp_path, model, exe), tmp_path / "out")
    assert merged["devices"]["LOCKED"]["error_type"] == "DeviceUnauthorizedError"
    assert "Allow USB debugging" in merged["devices"]["LOCKED"]["error"]
    assert merged["devices"]["GONE"]["error_type"] == "DeviceOfflineError"
    assert merged["profiles"] == []
    for s in ("LOCKED", "GONE"):
        rep = json.loads((tmp_path / "out" / s / "report.json").read_text())
        assert rep["complete"] is False and (tmp_path / "out" / s / "bench.log").exists()
    with pytest.raises(DeviceUnauthorizedError):
        adbmod.check_state(Adb().resolve(["LOCKED"])[0])
    with pytest.raises(DeviceOfflineError):
        adbmod.check_state(Adb().resolve(["GONE"])[0])


def test_wrong_abi(fake, tmp_path):
    x86 = phones.sd865("EMU", qemu_cpu="max")
    x86["props"] = {**x86["props"], "ro.product.cpu.abi": "x86_64", "ro.product.cpu.abilist": "x86_64,x86"}
    fake(x86)
    model, exe = _files(tmp_path, 1024)
    res = benchmod.DeviceBench(Adb(), Adb().resolve(["EMU"])[0], _opts(tmp_path, model, exe), tmp_path / "o").run()
    assert res.error_type == "WrongAbiError" and "x86_64" in res.error and "arm64-v8a" in res.error
    assert not any(e["op"] == "push" for e in phones.shell_log(tmp_path / "phones" / "EMU"))
    assert issubclass(WrongAbiError, adbmod.DeviceError)


def test_not_enough_space_is_refused_before_pushing(fake, tmp_path):
    fake(phones.sd865("SMALL", df_free_kb=4096))  # 4 MB free, 3 MB model + 16 MB margin needed
    model, exe = _files(tmp_path)
    res = benchmod.DeviceBench(Adb(), Adb().resolve(["SMALL"])[0], _opts(tmp_path, model, exe), tmp_path / "o").run()
    assert res.error_type == "NotEnoughSpaceError"
    assert "4 MB free" in res.error and "rm -rf /data/local/tmp/finllm-edge" in res.error
    assert not any(e["op"] == "push" for e in phones.shell_log(tmp_path / "phones" / "SMALL"))
    assert issubclass(NotEnoughSpaceError, adbmod.DeviceError)


def test_full_disk_push_fails_halfway_and_leaves_no_half_file(fake, tmp_path):
    # df says there is room, but the disk fills up during the model push (2 MB of 3 MB fit)
    fake(phones.sd865("FULL", disk_capacity_bytes=2 << 20))
    model, exe = _files(tmp_path)
    res = benchmod.DeviceBench(Adb(), Adb().resolve(["FULL"])[0], _opts(tmp_path, model, exe), tmp_path / "o").run()
    assert res.error_type == "PushFailedError"
    assert "ran out of space" in res.error and "partial file was removed" in res.error
    wd = tmp_path / "phones" / "FULL" / "data/local/tmp/finllm-edge"
    left = sorted(p.name for p in wd.iterdir() if p.is_file())
    assert left == ["fe-bench-armv8.2-a+dotprod+fp16"]  # the small file made it; no model, no .part
    pushes = [e for e in phones.shell_log(tmp_path / "phones" / "FULL") if e["op"] == "push"]
    assert pushes[-1]["remote"].endswith("m.gguf.part")  # the push really started and failed
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert rep["complete"] is False and rep["error_type"] == "PushFailedError"
    assert issubclass(PushFailedError, adbmod.DeviceError)


def test_push_skips_files_with_same_sha256_and_replaces_changed_ones(fake, tmp_path):
    fake(phones.sd865("P"))
    model, exe = _files(tmp_path, 4096)
    adb = Adb()
    entry = adb.resolve(["P"])[0]
    db = benchmod.DeviceBench(adb, entry, _opts(tmp_path, model, exe), tmp_path / "o")
    dev = adb.device(entry)
    info = infomod.read_info(dev)
    db.push_files(dev, info, [(exe, "fe-bench-x", True), (model, "m.gguf", False)])
    assert [e["skipped"] for e in db.report["pushed"]] == [False, False]
    db.report["pushed"].clear()
    db.push_files(dev, info, [(exe, "fe-bench-x", True), (model, "m.gguf", False)])
    assert [e["skipped"] for e in db.report["pushed"]] == [True, True]
    model.write_bytes(os.urandom(4096))
    db.report["pushed"].clear()
    db.push_files(dev, info, [(exe, "fe-bench-x", True), (model, "m.gguf", False)])
    assert [e["skipped"] for e in db.report["pushed"]] == [True, False]
    wd = tmp_path / "phones" / "P" / "data/local/tmp/finllm-edge"
    assert (wd / "m.gguf").read_bytes() == model.read_bytes()
    assert os.access(wd / "fe-bench-x", os.X_OK) and not os.access(wd / "m.gguf", os.X_OK)
    assert not list(wd.glob("*.part"))
    cmds = [e["cmd"] for e in phones.shell_log(tmp_path / "phones" / "P") if e["op"] == "shell"]
    assert any(c.startswith("sha256sum /data/local/tmp/finllm-edge/m.gguf") for c in cmds)
    assert any("mv -f /data/local/tmp/finllm-edge/m.gguf.part /data/local/tmp/finllm-edge/m.gguf" in c for c in cmds)


def test_disconnect_is_a_typed_error(fake, tmp_path):
    fake(phones.sd865("FLAKY", disconnect_after_shell_calls=1))
    adb = Adb()
    dev = adb.device(adb.resolve(["FLAKY"])[0])
    assert dev.shell("echo hi").stdout.strip() == "hi"
    with pytest.raises(DeviceDisconnectedError, match="disconnected"):
        dev.shell("echo again")
    assert [d.serial for d in adb.devices()] == []


def test_cool_down_waits_until_near_start_and_is_bounded(fake, tmp_path):
    hot = phones.sd865("HOT")
    fake(hot)
    model, exe = _files(tmp_path, 1024)
    adb = Adb()
    entry = adb.resolve(["HOT"])[0]
    db = benchmod.DeviceBench(adb, entry, _opts(tmp_path, model, exe), tmp_path / "o")
    dev = adb.device(entry)
    start = infomod.read_snapshot(dev)["cpu_temp_c"]
    zone = tmp_path / "phones" / "HOT" / "sys/class/thermal/thermal_zone3/temp"
    zone.write_text("50500\n")  # 15 C above start; the fake cools 3 C per shell call
    db.opts.cool_timeout_s = 60  # ends when cool (~5 polls); a loaded machine makes each fake adb call slow
    rec = db.cool_down(dev, start)
    assert rec["reached"] is True and rec["end_c"] <= start + 3.0 and rec["polls"] >= 4
    # never cools (cool step 0): the wait stops at the timeout and says so
    db.opts.cool_timeout_s = 0.2
    cfg = json.loads(Path(os.environ["FAKE_ADB_CONFIG"]).read_text())
    cfg["devices"][0]["thermal"]["cool_per_call_mc"] = 0
    Path(os.environ["FAKE_ADB_CONFIG"]).write_text(json.dumps(cfg))
    zone.write_text("70000\n")
    rec = db.cool_down(dev, start)
    assert rec["reached"] is False and 0.2 <= rec["waited_s"] < 30 and rec["end_c"] == 70.0
    assert "cool-down: still 70.0 C" in (tmp_path / "o" / "bench.log").read_text()


def test_throttling_is_flagged_from_scaling_max_freq(tmp_path):
    info = infomod.parse_info("T", "@P ro.product.cpu.abi=arm64-v8a\n"
                                   "@F 0 1 1804800 1804800 s\n@F 1 1 1996800 2841600 s\n")
    before = infomod.parse_snapshot("@T thermal_zone0 cpu-1-0-usr 40000\n@F 1 2841600 2841600 2841600 s\n")
    after = infomod.parse_snapshot("@T thermal_zone0 cpu-1-0-usr 71000\n@F 1 1996800 1996800 2841600 s\n")
    for s in (before, after):
        s["cpu_temp_c"] = infomod.cpu_temp(s)
    db = benchmod.DeviceBench.__new__(benchmod.DeviceBench)
    prof = db.annotate({"device": {}, "thermal": None}, info, "armv8-a", "2", before, after, {"waited_s": 0})
    th = prof["thermal"]
    assert th["throttled"] is True and th["throttled_cpus"] == {
        "1": {"cpuinfo_max_freq_khz": 2841600, "scaling_max_freq_khz": 1996800}}
    assert th["cpu_temp_rise_c"] == 31.0
    assert th["taskset_mask"] == "2" and prof["variant"] == "armv8-a"
    assert "emulated" not in prof  # a phone without ro.boot.qemu: left as fe-bench wrote it
