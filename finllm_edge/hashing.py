"""sha256 of files: the one implementation every manifest, profile, fetch and device push uses."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


INDEX_NAME = "sha256-index.json"
INDEX_MAX_ENTRIES = 256
INDEX_MAX_BYTES = 1 << 20


def _stamp(st: os.stat_result) -> list[int]:
    """What identifies a file's content without reading it: a write changes the size, mtime or
    ctime (ctime cannot be set back from user space), a replacement changes the inode."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _read_index(path: Path) -> dict[str, dict]:
    """The index, or {} when it is missing, too big or not what this module writes (never trusted
    beyond its shape: a bad entry is dropped, and a hit still needs the file's stat to match)."""
    try:
        if path.stat().st_size > INDEX_MAX_BYTES:
            return {}
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) and data.get("version") == 1 else None
    if not isinstance(entries, dict):
        return {}
    return {k: v for k, v in entries.items()
            if isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("sha256"), str)
            and _HEX64.fullmatch(v["sha256"]) and isinstance(v.get("stamp"), list) and len(v["stamp"]) == 5
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v["stamp"])}


def sha256_file_cached(path: str | os.PathLike, index_dir: str | os.PathLike | None = None) -> str:
    """sha256_file(path), remembered across processes in `index_dir`/sha256-index.json (default:
    the cache folder) by the file's real path and stat stamp (device, inode, size, mtime, ctime):
    a model loaded by every launch is hashed once, not at every launch. Any change to the file
    changes its stamp and it is hashed again."""
    from .fileio import atomic_write_json
    from .paths import cache_dir

    real = os.path.realpath(path)
    stamp = _stamp(os.stat(real))
    index = Path(index_dir) / INDEX_NAME if index_dir is not None else cache_dir() / INDEX_NAME
    entries = _read_index(index)
    hit = entries.get(real)
    if hit is not None and hit["stamp"] == stamp:
        return hit["sha256"]
    sha = sha256_file(real)
    if _stamp(os.stat(real)) != stamp:  # changed while it was read: do not remember it
        return sha
    entries.pop(real, None)
    entries[real] = {"stamp": stamp, "sha256": sha}
    while len(entries) > INDEX_MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(index, {"version": 1, "entries": entries})
    except OSError:
        pass  # a read-only cache folder costs a hash per process, nothing else
    return sha
