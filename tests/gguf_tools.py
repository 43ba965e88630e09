"""Helpers shared by the GGUF validator tests and scripts/fuzz_gguf.py: build and run the C
validator (plain `cc`, optionally with ASan+UBSan), and structure-aware GGUF mutators."""
from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
C_SOURCES = [ROOT / "native/src/gguf_validate.c", ROOT / "tests/c/gguf_validate_cli.c"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
SAN_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=99",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=98"}
SAN_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


def build_c_validator(outdir: Path, sanitize: bool = False) -> Path:
    """Compiles native/src/gguf_validate.c with the test driver; strict warnings are errors."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise RuntimeError("no C compiler (cc) on PATH; install build-essential")
    exe = Path(outdir) / ("gguf_validate_san" if sanitize else "gguf_validate")
    cmd = [cc, "-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Wpedantic", "-Wshadow", "-Werror",
           f"-I{ROOT / 'native/src'}", *map(str, C_SOURCES), "-o", str(exe)]
    if sanitize:
        cmd[1:1] = SANITIZE
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


@dataclass(frozen=True)
class CVerdict:
    code: int          # 0 ok, -1 io, -2 format, -3 nomem
    offset: int
    field: str
    message: str


def run_c_validator(exe: Path, paths: list[Path],
                    sanitize: bool = False) -> tuple[list[CVerdict], subprocess.CompletedProcess]:
    """Runs the C validator over paths in one process; returns one verdict per path."""
    env = {**os.environ, **SAN_ENV} if sanitize else None
    proc = subprocess.run([str(exe), *map(str, paths)], capture_output=True, text=True,
                          errors="replace", env=env, timeout=600)
    lines = proc.stdout.splitlines()
    out = []
    for k in range(0, len(lines) - 1, 2):
        code, off, field = lines[k].split(" ", 2)
        out.append(CVerdict(int(code), int(off), field, lines[k + 1]))
    return out, proc


def sanitizer_report(text: str) -> str | None:
    return next((line for line in text.splitlines() if any(m in line for m in SAN_MARKERS)), None)


# -- structure-aware mutation -------------------------------------------------------------

INTERESTING_U64 = [0, 1, 2, 3, 7, 8, 31, 32, 33, 63, 64, 255, 256, 4096, 65535, 65536, 65537,
                   (1 << 24), (1 << 24) + 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32,
                   (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


def _overwrite_field(data: bytearray, records, rnd: random.Random, size: int) -> None:
    start, end, _ = rnd.choice(records)
    width = end - start
    if width not in (1, 2, 4, 8):           # a string body: flip one byte in it
        data[rnd.randrange(start, end)] ^= 1 << rnd.randrange(8)
        return
    choice = rnd.random()
    if choice < 0.5:
        v = rnd.choice(INTERESTING_U64 + [size, size - start, size + 1])
    elif choice < 0.75:
        v = int.from_bytes(data[start:end], "little") + rnd.choice([-2, -1, 1, 2, 32, -32])
    else:
        v = rnd.getrandbits(8 * width)
    data[start:end] = (v % (1 << (8 * width))).to_bytes(width, "little")


def _truncate(data: bytearray, records, rnd: random.Random, size: int) -> None:
    cut = rnd.choice([rnd.randrange(len(data) + 1), rnd.choice(records)[0]])
    del data[cut:]


def _splice(data: bytearray, records, rnd: random.Random, size: int) -> None:
    if not data:
        return
    a = rnd.randrange(len(data))
    n = rnd.randrange(1, 64)
    chunk = data[a:a + n]
    b = rnd.choice(records)[0] if rnd.random() < 0.7 else rnd.randrange(len(data) + 1)
    if rnd.random() < 0.5:
        data[b:b] = chunk                     # insert: everything after slides
    else:
        data[b:b + len(chunk)] = chunk        # overwrite in place


def _delete(data: bytearray, records, rnd: random.Random, size: int) -> None:
    start, end, _ = rnd.choice(records)
    del data[start:end]


def _set_type(data: bytearray, records, rnd: random.Random, size: int) -> None:
    """Rewrites a value type / array element type / ggml type with a valid or invalid id."""
    typed = [r for r in records if r[1] - r[0] == 4]
    if typed:
        start, end, _ = rnd.choice(typed)
        data[start:end] = struct.pack("<I", rnd.choice(list(range(14)) + [31, 42, 43, 99, 0xFFFFFFFF]))


def _bitflip(data: bytearray, records, rnd: random.Random, size: int) -> None:
    if data:
        data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)


MUTATORS = [_overwrite_field, _overwrite_field, _set_type, _truncate, _splice, _delete, _bitflip]


def mutate(base: bytes, records, rnd: random.Random, max_ops: int = 3) -> bytes:
    """1..max_ops structure-aware mutations of a valid file whose field layout is `records`."""
    data = bytearray(base)
    header_end = next((r[0] for r in records if r[2] == "(padding)"), len(base))
    fields = [r for r in records if r[2] != "(padding)" and r[1] > r[0] and r[0] < header_end]
    for _ in range(rnd.randint(1, max_ops)):
        live = [r for r in fields if r[1] <= len(data)]  # earlier ops may have cut the file
        if not live:
            break
        rnd.choice(MUTATORS)(data, live, rnd, len(base))
    return bytes(data)


def file_records(path: Path) -> list[tuple[int, int, str]]:
    """Primitive-level (start, end, name) records of a GGUF file's header, via the gguf package."""
    import gguf

    r = gguf.GGUFReader(str(path))
    out = []
    for f in list(r.fields.values()) + [t.field for t in r.tensors]:
        pos = f.offset
        for part in f.parts:
            n, item = int(part.nbytes), part.dtype.itemsize
            step = item if item > 1 else n          # u64 arrays split per element; strings whole
            for k in range(0, n, step):
                out.append((pos + k, pos + k + step, f.name))
            pos += n
    out.sort()
    out.append((out[-1][1], r.data_offset, "(padding)"))
    return out
