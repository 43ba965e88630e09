"""The `device` and `thermal` blocks of a LatencyProfile, read from /proc and /sys (Linux, Android)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .threads import SYSFS_CPU, ThreadChoice, read_topology

THERMAL_ROOT = Path("/sys/class/thermal")


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """'Intel(R) Xeon(R) ...' on x86; 'Hardware' or the CPU part list on ARM; else platform.processor()."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields.setdefault(k.strip(), []).append(v.strip())
    for key in ("model name", "Hardware", "Model"):
        if fields.get(key):
            return fields[key][0]
    parts = fields.get("CPU part")
    if parts:
        uniq = sorted(set(parts))
        return f"ARM implementer {fields.get('CPU implementer', ['?'])[0]} parts {','.join(uniq)}"
    return platform.processor() or platform.machine()


def mem_total_mb(meminfo: str | os.PathLike = "/proc/meminfo") -> float:
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20, 1)
    except (ValueError, OSError, AttributeError):
        return 0.0


def device_block(choice: ThreadChoice, sysfs_root: str | os.PathLike = SYSFS_CPU) -> dict:
    topo = read_topology(sysfs_root, choice.affinity)
    return {
        "cpu_model": cpu_model(),
        "arch": platform.machine(),
        "cores_total": os.cpu_count() or len(topo.allowed),
        "cores_used": list(choice.cores),
        "affinity": list(choice.affinity),
        "governor": {str(c): g for c, g in sorted(topo.governor.items())},
        "max_freq_khz": {str(c): f for c, f in sorted(topo.max_freq_khz.items())},
        "mem_total_mb": mem_total_mb(),
    }


def thermal_snapshot(root: str | os.PathLike = THERMAL_ROOT,
                     sysfs_root: str | os.PathLike = SYSFS_CPU) -> dict | None:
    """{'temp_c': {zone_type: C}, 'cur_freq_khz': {cpu: kHz}} or None when nothing is readable."""
    temps: dict[str, float] = {}
    base = Path(root)
    if base.is_dir():
        for zone in sorted(base.glob("thermal_zone*")):
            try:
                t = int((zone / "temp").read_text().strip())
                kind = (zone / "type").read_text().strip()
            except (OSError, ValueError):
                continue
            temps[f"{zone.name}:{kind}"] = t / 1000.0 if abs(t) > 1000 else float(t)
    freqs: dict[str, int] = {}
    for d in sorted(Path(sysfs_root).glob("cpu[0-9]*/cpufreq/scaling_cur_freq")):
        try:
            freqs[d.parent.parent.name[3:]] = int(d.read_text().strip())
        except (OSError, ValueError):
            continue
    if not temps and not freqs:
        return None
    return {"temp_c": temps, "cur_freq_khz": freqs}
