"""Thread count on big.LITTLE CPUs: a binding of the core's rule (fe_choose_threads, native/src/threads.cpp).

Decode on a phone is fastest on the big cores: the default is one thread per performance
core (every allowed core whose cpuinfo_max_freq is above the slowest one's; all allowed cores
when the frequencies are equal or unreadable). The rule exists once, in C: Python, fe-bench
and the Android app ask it.
"""

from __future__ import annotations

import ctypes as C
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import _native
from .errors import InvalidArgumentError

_MAX_CPUS = 1024


class _ThreadChoice(C.Structure):
    _fields_ = [("n_threads", C.c_int32), ("n_cores", C.c_int32), ("cores", C.c_int32 * _MAX_CPUS),
                ("n_affinity", C.c_int32), ("affinity", C.c_int32 * _MAX_CPUS), ("reason", C.c_char * 192)]


@dataclass(frozen=True)
class ThreadChoice:
    n_threads: int
    cores: tuple[int, ...]
    affinity: tuple[int, ...]
    reason: str


def choose_threads(n_threads: int | None = None, sysfs_root: str | os.PathLike | None = None,
                   affinity: tuple[int, ...] | list[int] | None = None) -> ThreadChoice:
    """The default thread count (one per performance core), or the caller's `n_threads`, and the
    cores they occupy. `sysfs_root` (a folder standing for /sys) and `affinity` are for tests and
    for describing another device (a phone over adb)."""
    if n_threads is not None and (isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1):
        raise InvalidArgumentError(f"n_threads = {n_threads!r} is out of range: use an integer >= 1")
    L = _native.lib()
    out = _ThreadChoice()
    aff = list(affinity) if affinity is not None else []
    arr = (C.c_int32 * max(1, len(aff)))(*aff)
    fn = L.cdll.fe_choose_threads
    fn.restype = C.c_int
    fn.argtypes = [C.c_int32, C.c_char_p, C.POINTER(C.c_int32), C.c_size_t, C.POINTER(_ThreadChoice)]
    root = os.fsencode(sysfs_root) if sysfs_root is not None else None
    L.check(fn(n_threads or 0, root, arr if aff else None, len(aff), C.byref(out)), "choose_threads")
    return ThreadChoice(int(out.n_threads), tuple(out.cores[: out.n_cores]), tuple(out.affinity[: out.n_affinity]),
                        out.reason.decode("utf-8", "replace"))


def choose_threads_for(max_freq_khz: dict[int, int | None], n_threads: int | None = None) -> ThreadChoice:
    """The same rule for another device described by its CPUs' cpuinfo_max_freq (None: unreadable)."""
    with tempfile.TemporaryDirectory(prefix="fe-sysfs-") as root:
        cpus = sorted(max_freq_khz)
        base = Path(root) / "devices" / "system" / "cpu"
        for cpu, freq in max_freq_khz.items():
            d = base / f"cpu{cpu}" / "cpufreq"
            d.mkdir(parents=True)
            if freq:
                (d / "cpuinfo_max_freq").write_text(f"{int(freq)}\n")
        return choose_threads(n_threads, root, cpus)
