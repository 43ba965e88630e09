"""The converter's names for crash-safe writes. The one implementation is finllm_edge.fileio
(temporary `<name>.partial-<pid>-<hex>` file, fsync, rename, fsync the folder); an interrupted
run leaves only `*.partial-*` files, removed by `clean_partials()` at the start of the next run."""

from __future__ import annotations

from finllm_edge.fileio import PARTIAL_TAG, atomic_path, clean_partials, commit, fsync_dir, partial_name
from finllm_edge.fileio import atomic_write_json as write_json
from finllm_edge.fileio import atomic_write_text as write_text

__all__ = ["PARTIAL_TAG", "atomic_path", "clean_partials", "commit", "fsync_dir", "partial_name", "write_json",
           "write_text"]
