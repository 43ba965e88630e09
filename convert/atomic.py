"""Crash-safe writes: write to `<name>.partial-<pid>`, fsync, rename, fsync the folder.

An interrupted run leaves only `*.partial-*` files, which never look finished and are
removed by `clean_partials()` at the start of the next run.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

PARTIAL_TAG = ".partial-"


def partial_name(final: Path) -> Path:
    return final.with_name(f"{final.name}{PARTIAL_TAG}{os.getpid()}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, final: Path) -> None:
    """fsync `tmp`, rename it to `final` and fsync the folder."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; on success it becomes `final`, on error it is deleted."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(final)
    try:
        yield tmp
        commit(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(final: Path, obj) -> None:
    write_text(final, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def clean_partials(folder: Path) -> list[Path]:
    """Delete leftovers of interrupted runs under `folder`; return what was removed."""
    removed = []
    if folder.exists():
        for p in folder.rglob(f"*{PARTIAL_TAG}*"):
            if p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
