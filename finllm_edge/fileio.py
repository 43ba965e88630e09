"""Crash-safe writes, the one implementation: write a temporary file next to the target,
fsync it, rename it over the target, fsync the folder.

A reader sees the old file or the new one, never half of one. An interrupted writer leaves
only `<name>.partial-<pid>-<hex>` files, which never look finished; `clean_partials(folder)`
removes them.

    atomic_write_text(path, text)          atomic_write_bytes(path, data)
    atomic_write_json(path, obj)           with atomic_open(path, "w") as f: ...
    with atomic_path(path) as tmp: run_tool(out=tmp)     # a tool that writes a file by name
    commit_dir(tmp_dir, final_dir)         # a finished folder replaces the old one
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import IO, Any, Iterator

PARTIAL_TAG = ".partial-"


def partial_name(final: str | os.PathLike) -> Path:
    """A temporary name next to `final`, unique per process and call, marked as partial."""
    final = Path(final)
    return final.with_name(f"{final.name}{PARTIAL_TAG}{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside `path` durable (a no-op where folders cannot be opened)."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """fsync the finished file `tmp`, rename it to `final` (replacing it) and fsync the folder."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `final` (not created); when the block ends without an
    error the file written there becomes `final`, otherwise it is deleted."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(final)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"nothing was written to {tmp} for {final}")
        commit(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(final: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """`open(final, mode)` that only replaces `final` once the block has finished without an error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(final) as tmp:
        with open(tmp, mode, encoding=None if mode == "wb" else encoding) as f:
            yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    with atomic_open(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """JSON with a final newline; the object is serialised before anything is written."""
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def _fsync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(root, name)
            if not p.is_symlink():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        fsync_dir(root)


def commit_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Make the finished folder `tmp` become `final`: fsync its files, move any old `final`
    aside, rename, then delete the old one. A crash leaves the old folder or the new one in
    place (plus, at worst, a `<final>.partial-*` leftover for clean_partials)."""
    tmp, final = Path(tmp), Path(final)
    _fsync_tree(tmp)
    if final.exists():
        old = partial_name(final)
        os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
        fsync_dir(final.parent)


def clean_partials(folder: str | os.PathLike) -> list[Path]:
    """Delete the leftovers of interrupted writes under `folder`; return what was removed."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.exists():
        return removed
    for p in sorted(folder.rglob(f"*{PARTIAL_TAG}*"), key=lambda p: len(p.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed
