"""`finllm-edge native fetch`: the pinned llama-cpp-python sdist -> vendor/llama.cpp in the cache.

The sdist comes from PyPI, its sha256 is checked against finllm_edge.pins, and it is
extracted into <cache>/src/. Nothing of it ever enters the git tree.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from .. import pins
from ..errors import FetchError
from ..paths import cache_dir

IDENTITY_FILE = "finllm-edge-llama-identity.json"


from ..hashing import sha256_file as _sha256  # noqa: E402


def _download(url: str, dest: Path, progress: bool) -> None:
    tmp = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while True:
                block = resp.read(1 << 20)
                if not block:
                    break
                out.write(block)
                done += len(block)
                if progress and total:
                    print(f"\r  downloading {dest.name}: {done * 100 // total:3d}%", end="", file=sys.stderr)
            out.flush()
            os.fsync(out.fileno())
        if progress:
            print(file=sys.stderr)
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FetchError(
            f"could not download {url}: {exc}. Check that PyPI is reachable, or place "
            f"{pins.SDIST_FILENAME} (sha256 {pins.SDIST_SHA256}) in {dest.parent} by hand."
        ) from exc


def sdist_path(progress: bool = True) -> Path:
    """The verified sdist in <cache>/downloads, downloading it if needed."""
    dest = cache_dir() / "downloads" / pins.SDIST_FILENAME
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        _download(pins.SDIST_URL, dest, progress)
    digest = _sha256(dest)
    if digest != pins.SDIST_SHA256:
        bad = dest.with_name(dest.name + ".bad")
        os.replace(dest, bad)
        raise FetchError(
            f"{dest.name} has sha256 {digest}, expected {pins.SDIST_SHA256} (pinned in "
            f"finllm_edge/pins.py); moved it to {bad}. Run `finllm-edge native fetch` again."
        )
    return dest


def _safe_members(tar: tarfile.TarFile, prefix: str):
    for m in tar.getmembers():
        if not m.name.startswith(prefix):
            continue
        if m.issym() or m.islnk() or m.isdev():
            continue
        if ".." in Path(m.name).parts or m.name.startswith("/"):
            raise FetchError(f"refusing unsafe path in sdist: {m.name}")
        yield m


def llama_src_dir(progress: bool = True) -> Path:
    """Path of the extracted llama.cpp tree (<cache>/src/llama.cpp-<pin>), fetching as needed."""
    root = cache_dir() / "src"
    target = root / f"llama.cpp-{pins.LLAMA_CPP_PYTHON_VERSION}"
    if (target / IDENTITY_FILE).exists():
        return target
    sdist = sdist_path(progress)
    root.mkdir(parents=True, exist_ok=True)
    top = f"llama_cpp_python-{pins.LLAMA_CPP_PYTHON_VERSION}/"
    vendor = top + "vendor/llama.cpp/"
    head_file = top + ".git/modules/vendor/llama.cpp/HEAD"
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        if progress:
            print(f"  extracting vendor/llama.cpp from {sdist.name}", file=sys.stderr)
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, members=list(_safe_members(tar, vendor)), filter="data")
            commit = ""
            try:
                f = tar.extractfile(head_file)
                commit = f.read().decode().strip() if f else ""
            except KeyError:
                pass
        src = Path(tmp) / vendor
        if not (src / "CMakeLists.txt").exists():
            raise FetchError(f"{sdist.name} does not contain vendor/llama.cpp/CMakeLists.txt")
        identity = {
            "llama_cpp_python": pins.LLAMA_CPP_PYTHON_VERSION,
            "llama_cpp_commit": commit,
            "sdist_sha256": pins.SDIST_SHA256,
        }
        (src / IDENTITY_FILE).write_text(json.dumps(identity, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(src, target)
    return target


def llama_identity() -> dict:
    """{"llama_cpp_python", "llama_cpp_commit", "sdist_sha256"} of the pinned tree."""
    path = cache_dir() / "src" / f"llama.cpp-{pins.LLAMA_CPP_PYTHON_VERSION}" / IDENTITY_FILE
    if path.exists():
        return json.loads(path.read_text())
    return {"llama_cpp_python": pins.LLAMA_CPP_PYTHON_VERSION, "llama_cpp_commit": "",
            "sdist_sha256": pins.SDIST_SHA256}


def llama_version_string() -> str:
    ident = llama_identity()
    commit = ident.get("llama_cpp_commit") or "unknown-commit"
    return f"{ident['llama_cpp_python']} ({commit[:12]})"
