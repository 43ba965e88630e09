"""sha256 of files in the Python tools: manifests, fetches, device pushes. The runtime's model identity
(saved prompt state, profiles) is the core's fe_file_sha256, remembered across processes by its hash
index (fe_set_hash_index_dir; finllm_edge._native sets the cache folder)."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
