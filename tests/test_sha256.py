"""fe_file_sha256 (model fingerprints in profiles and saved-state files): the CPU's SHA-256
instructions (x86 SHA-NI here; ARMv8 crypto under qemu in test_arm_emulated's ctest) give the
same digests as the portable code and as hashlib, over sizes around every block boundary."""
from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.native

PROBE = """
import ctypes, sys
from finllm_edge.cpu_variant import library_path
L = ctypes.CDLL(str(library_path()))
L.fe_sha256_impl.restype = ctypes.c_char_p
print(L.fe_sha256_impl().decode())
for p in sys.argv[1:]:
    buf = ctypes.create_string_buffer(65)
    st = L.fe_file_sha256(p.encode(), buf)
    print(buf.value.decode() if st == 0 else f"error {st}")
"""

SIZES = [0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096 + 13, (1 << 20) + 7, 3 * (1 << 20)]


def _probe(paths: list[Path], portable: bool) -> tuple[str, list[str]]:
    env = dict(os.environ)
    env.pop("FE_SHA256_PORTABLE", None)
    if portable:
        env["FE_SHA256_PORTABLE"] = "1"
    out = subprocess.run([sys.executable, "-c", PROBE, *map(str, paths)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return out[0], out[1:]


def test_accelerated_and_portable_match_hashlib(tmp_path):
    rng = random.Random(7)
    paths, want = [], []
    for n in SIZES:
        data = bytes(rng.getrandbits(8) for _ in range(min(n, 4096))) * (n // 4096 + 1)
        data = data[:n]
        p = tmp_path / f"f{n}.bin"
        p.write_bytes(data)
        paths.append(p)
        want.append(hashlib.sha256(data).hexdigest())
    impl, got = _probe(paths, portable=False)
    impl_p, got_p = _probe(paths, portable=True)
    assert impl_p == "portable"
    cpu_has_sha = " sha_ni" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else False
    if os.uname().machine == "x86_64" and cpu_has_sha:
        assert impl == "x86-sha-ni"
    assert got_p == want
    assert got == want
