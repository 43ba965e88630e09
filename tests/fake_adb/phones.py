"""Device descriptions for the fake adb: a Snapdragon 865 phone and an ARMv8.0 (Cortex-A53) one.

`write_config(tmp, [sd865("A"), armv8_0("B")])` writes the JSON the fake reads and returns
the env to run with (fake adb first on PATH, $FAKE_ADB_CONFIG set).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FAKE_DIR = Path(__file__).resolve().parent

_A77_FEATURES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                 "lrcpc dcpop asimddp")
_A53_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"


def _cpuinfo(cores: list[tuple[str, str, str]], hardware: str) -> str:
    """cores: (implementer, part, features) per CPU, in the layout of an arm64 Android kernel."""
    out = []
    for i, (impl, part, feats) in enumerate(cores):
        out.append(f"processor\t: {i}\nBogoMIPS\t: 38.40\nFeatures\t: {feats}\nCPU implementer\t: {impl}\n"
                   f"CPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: {part}\nCPU revision\t: 0\n")
    out.append(f"Hardware\t: {hardware}\n")
    return "\n".join(out)


def _meminfo(total_kb: int, avail_kb: int) -> str:
    return (f"MemTotal:       {total_kb} kB\nMemFree:         {avail_kb // 3} kB\n"
            f"MemAvailable:   {avail_kb} kB\nBuffers:            4096 kB\nCached:          {avail_kb // 2} kB\n")


def sd865(serial: str, **over) -> dict:
    """Snapdragon 865 (SM8250 'kona'): 4x A55 @1.80 + 3x A77 @2.42 + 1x A77 @2.84 GHz, 8 GB."""
    cores = [("0x51", "0x805", _A77_FEATURES)] * 4 + [("0x41", "0xd0d", _A77_FEATURES)] * 4
    cfg = {
        "serial": serial,
        "state": "device",
        "qemu_cpu": "cortex-a76",
        "model": "SM_G981B",
        "product": "x1sxxx",
        "device": "x1s",
        "props": {
            "ro.product.cpu.abi": "arm64-v8a",
            "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
            "ro.soc.manufacturer": "Qualcomm",
            "ro.soc.model": "SM8250",
            "ro.board.platform": "kona",
            "ro.hardware": "qcom",
            "ro.product.manufacturer": "samsung",
            "ro.product.model": "SM-G981B",
            "ro.build.version.release": "13",
            "ro.build.version.sdk": "33",
            "ro.boot.qemu": "1",  # honest: the fake runs fe-bench under qemu (profiles get emulated=true)
        },
        "cpuinfo": _cpuinfo(cores, "Qualcomm Technologies, Inc SM8250"),
        "meminfo": _meminfo(7802076, 3412000),
        "cpus": [{"max_khz": 1804800, "cur_khz": 1171200}] * 4
                + [{"max_khz": 2419200, "cur_khz": 1209600}] * 3 + [{"max_khz": 2841600, "cur_khz": 1286400}],
        "thermal": {
            "zones": [
                {"type": "aoss0-usr", "temp_mc": 33000},
                {"type": "cpu-0-0-usr", "temp_mc": 34000},
                {"type": "cpu-1-0-usr", "temp_mc": 35000},
                {"type": "cpu-1-2-usr", "temp_mc": 35500},
                {"type": "gpuss-0-usr", "temp_mc": 33500},
                {"type": "battery", "temp_mc": 30000},
            ],
            "heat_per_run_mc": 12000,
            "cool_per_call_mc": 3000,
            "throttle_mc": 60000,
            "throttle_khz": 1996800,
        },
        "df_free_kb": 40_000_000,
        "disk_capacity_bytes": None,
        "disconnect_after_shell_calls": None,
        "disconnect_on_run": None,
    }
    cfg.update(over)
    return cfg


def armv8_0(serial: str, **over) -> dict:
    """An ARMv8.0 phone (MediaTek Helio P22 class): 4x A53 @2.0 + 4x A53 @1.5 GHz, no dotprod/fp16."""
    cores = [("0x41", "0xd03", _A53_FEATURES)] * 8
    cfg = {
        "serial": serial,
        "state": "device",
        "qemu_cpu": "cortex-a53",
        "model": "Moto_E6",
        "props": {
            "ro.product.cpu.abi": "arm64-v8a",
            "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
            "ro.soc.manufacturer": "Mediatek",
            "ro.soc.model": "MT6762",
            "ro.board.platform": "mt6762",
            "ro.hardware": "mt6762",
            "ro.product.manufacturer": "motorola",
            "ro.product.model": "moto e6",
            "ro.build.version.release": "10",
            "ro.build.version.sdk": "29",
            "ro.boot.qemu": "1",
        },
        "cpuinfo": _cpuinfo(cores, "MT6762V/WD"),
        "meminfo": _meminfo(1935212, 612000),
        "cpus": [{"max_khz": 2001000}] * 4 + [{"max_khz": 1500000}] * 4,
        "thermal": {
            "zones": [{"type": "mtktscpu", "temp_mc": 38000}, {"type": "mtktsbattery", "temp_mc": 31000}],
            "heat_per_run_mc": 4000,
            "cool_per_call_mc": 2000,
        },
        "df_free_kb": 6_000_000,
        "disk_capacity_bytes": None,
        "disconnect_after_shell_calls": None,
        "disconnect_on_run": None,
    }
    cfg.update(over)
    return cfg


def write_config(tmp: Path, devices: list[dict]) -> dict:
    """Write the fake's config under tmp (each device's sandbox in tmp/phones/<serial>); return env."""
    for d in devices:
        d.setdefault("root", str(tmp / "phones" / d["serial"].replace(":", "_")))
    cfg_path = tmp / "fake_adb.json"
    cfg_path.write_text(json.dumps({"devices": devices}, indent=2))
    env = dict(os.environ)
    env["PATH"] = f"{FAKE_DIR}{os.pathsep}{env.get('PATH', '')}"
    env["FAKE_ADB_CONFIG"] = str(cfg_path)
    env.pop("ANDROID_SERIAL", None)
    env.pop("FINLLM_EDGE_ADB", None)
    return env


def shell_log(root: str | Path) -> list[dict]:
    path = Path(root) / ".fake" / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
