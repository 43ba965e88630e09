"""Stage `manifest`: sha256 and size of every input and output, bits per weight, options, versions.

manifest.json is written last; its presence marks a finished conversion.
"""

from __future__ import annotations

import hashlib
import platform
import time
from importlib import metadata
from pathlib import Path

VERSIONED = ("torch", "transformers", "peft", "gguf", "safetensors", "numpy", "llama_cpp_python", "tokenizers",
             "finllm-edge")


from finllm_edge.hashing import sha256_file  # noqa: E402,F401


def file_entry(path: Path, root: Path | None = None) -> dict:
    path = Path(path)
    name = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
    return {"path": name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def combined_sha256(files: list[Path]) -> str:
    """One hash over several files (name + content hash), e.g. an adapter folder."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.name):
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def build_manifest(*, inputs: dict[str, list[Path]], outputs: list[dict], out_root: Path, options: dict,
                   llama_identity: dict, stages: dict, notes: list[str], merged_files: list[Path]) -> dict:
    return {
        "schema_version": 1,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": {k: [file_entry(p) for p in v] for k, v in inputs.items()},
        "merged": [file_entry(p, out_root) for p in merged_files],
        "artifacts": [{**file_entry(Path(o["path"]), out_root), **{k: v for k, v in o.items() if k != "path"}}
                      for o in outputs],
        "options": options,
        "llama_cpp": llama_identity,
        "versions": versions(),
        "stages_seconds": stages,
        "notes": notes,
    }
