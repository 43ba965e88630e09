"""Thread count on big.LITTLE CPUs.

Decode on a phone is fastest on the big cores: spilling onto the LITTLE cluster makes every
layer wait for the slowest thread. The default is therefore the set of *performance cores*:
every allowed core whose `cpuinfo_max_freq` is above that of the slowest cluster (on a
Snapdragon 865, 1 x 2.84 GHz + 3 x 2.42 GHz + 4 x 1.80 GHz -> the 4 cores above 1.80 GHz).
When all cores run at the same maximum frequency (or sysfs is unreadable, as in many VMs),
every core in the process's affinity mask is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

SYSFS_CPU = Path("/sys/devices/system/cpu")


@dataclass(frozen=True)
class CpuTopology:
    """What sysfs says about the CPUs this process may run on."""

    allowed: tuple[int, ...]
    max_freq_khz: dict[int, int] = field(default_factory=dict)
    governor: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ThreadChoice:
    n_threads: int
    cores: tuple[int, ...]
    affinity: tuple[int, ...]
    reason: str


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _parse_cpu_list(text: str) -> list[int]:
    """'0-3,6,8-9' -> [0, 1, 2, 3, 6, 8, 9]"""
    cpus: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


def current_affinity() -> tuple[int, ...]:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))


def read_topology(sysfs_root: str | os.PathLike = SYSFS_CPU,
                  affinity: tuple[int, ...] | None = None) -> CpuTopology:
    root = Path(sysfs_root)
    if affinity is None:
        affinity = current_affinity()
    online = _read(root / "online")
    if online:
        on = set(_parse_cpu_list(online))
        allowed = tuple(c for c in affinity if c in on) or tuple(affinity)
    else:
        allowed = tuple(affinity)
    freqs: dict[int, int] = {}
    govs: dict[int, str] = {}
    for cpu in allowed:
        d = root / f"cpu{cpu}" / "cpufreq"
        f = _read(d / "cpuinfo_max_freq")
        if f and f.isdigit():
            freqs[cpu] = int(f)
        g = _read(d / "scaling_governor")
        if g:
            govs[cpu] = g
    return CpuTopology(allowed=allowed, max_freq_khz=freqs, governor=govs)


def performance_cores(topo: CpuTopology) -> tuple[tuple[int, ...], str]:
    """The cores to run on, and why."""
    if not topo.allowed:
        return (0,), "no CPU information; using one thread"
    known = {c: f for c, f in topo.max_freq_khz.items() if c in topo.allowed}
    if len(known) < len(topo.allowed):
        return topo.allowed, "cpufreq not readable; using every core in the affinity mask"
    slowest = min(known.values())
    fast = tuple(c for c in topo.allowed if known[c] > slowest)
    if not fast:
        return topo.allowed, f"all {len(topo.allowed)} cores share max freq {slowest} kHz"
    clusters = sorted({known[c] for c in fast}, reverse=True)
    desc = " + ".join(f"{sum(1 for c in fast if known[c] == f)}x{f / 1e6:.2f}GHz" for f in clusters)
    return fast, f"performance cores {desc}; skipping {len(topo.allowed) - len(fast)} cores at {slowest / 1e6:.2f}GHz"


def choose_threads(n_threads: int | None = None, sysfs_root: str | os.PathLike = SYSFS_CPU,
                   affinity: tuple[int, ...] | None = None) -> ThreadChoice:
    """The default thread count (one per performance core), or the caller's `n_threads`."""
    topo = read_topology(sysfs_root, affinity)
    cores, reason = performance_cores(topo)
    aff = tuple(affinity) if affinity is not None else current_affinity()
    if n_threads is not None:
        if n_threads <= 0:
            raise ValueError(f"n_threads must be positive, got {n_threads}")
        # The caller's count: report the fastest cores it would occupy, in order of speed.
        order = sorted(topo.allowed, key=lambda c: (-topo.max_freq_khz.get(c, 0), c))
        return ThreadChoice(n_threads, tuple(sorted(order[:n_threads])), aff, f"{n_threads} threads requested")
    return ThreadChoice(len(cores), tuple(cores), aff, reason)
