"""The core's cross-process hash index (fe_set_hash_index_dir; the Python binding keeps it in the cache
folder): a new process takes a file's sha256 from the index when the file's stat stamp matches, and
hashes it again after any change; a damaged index is never trusted. The C test (test_device.c
test_hash_index) covers the damaged-line variants one by one."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from finllm_edge.models import default_model_path

INDEX = "sha256-index.txt"
FAKE = "0123456789abcdef" * 4


def fresh_process(cache: Path, code: str) -> str:
    """Run `code` in a new interpreter whose cache folder is `cache`; its last stdout line."""
    env = dict(os.environ, FINLLM_EDGE_CACHE=str(cache))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def core_sha(cache: Path, path: Path) -> str:
    return fresh_process(cache, f"from finllm_edge import _native; print(_native.file_sha256({str(path)!r}))")


def entry(cache: Path, path: Path) -> list[str]:
    lines = (cache / INDEX).read_text().splitlines()
    assert lines[0] == "finllm-edge sha256-index 1"
    hits = [ln.split(" ", 6) for ln in lines[1:] if ln.split(" ", 6)[-1] == os.path.realpath(path)]
    assert len(hits) == 1, lines
    return hits[0]


def test_a_new_process_takes_the_hash_from_the_index_until_the_file_changes(tmp_path):
    cache, f = tmp_path / "cache", tmp_path / "model.gguf"
    f.write_bytes(b"weights" * 1000)
    want = hashlib.sha256(f.read_bytes()).hexdigest()
    assert core_sha(cache, f) == want
    e = entry(cache, f)
    st = f.stat()
    assert e[0] == want and [int(x) for x in e[1:6]] == [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                                         st.st_ctime_ns]
    # plant another hash for the same stamp: a new process believes the index (it does not read the file)
    text = (cache / INDEX).read_text()
    (cache / INDEX).write_text(text.replace(want, FAKE))
    assert core_sha(cache, tmp_path / "." / "model.gguf") == FAKE  # same real path
    # same size, new content, the old mtime put back: the ctime still moved, so it is hashed again
    f.write_bytes(b"WEIGHTS" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert core_sha(cache, f) == hashlib.sha256(b"WEIGHTS" * 1000).hexdigest()
    os.replace(f, tmp_path / "old.gguf")
    f.write_bytes(b"other" * 10)  # replaced by another file (another inode)
    assert core_sha(cache, f) == hashlib.sha256(b"other" * 10).hexdigest()


@pytest.mark.parametrize("damage", ["garbage", "no header", "uppercase hex", "oversize"])
def test_a_damaged_index_is_ignored_and_rewritten(tmp_path, damage):
    cache, f = tmp_path / "cache", tmp_path / "m.gguf"
    f.write_bytes(b"x" * 100)
    want = hashlib.sha256(b"x" * 100).hexdigest()
    assert core_sha(cache, f) == want
    good = (cache / INDEX).read_text()
    planted = good.replace(want, FAKE)
    text = {"garbage": "\x00\xff not an index \n" * 10, "no header": planted.split("\n", 1)[1],
            "uppercase hex": good.replace(want, FAKE.upper()),
            "oversize": planted + "x" * (1 << 20)}[damage]
    (cache / INDEX).write_text(text)
    os.utime(f)  # a new mtime: the entry no longer matches either way, except as planted below
    if damage != "garbage":
        text = text.replace(entry_stamp(good, f, stale=True), entry_stamp(good, f))
        (cache / INDEX).write_text(text)
    assert core_sha(cache, f) == want
    assert entry(cache, f)[0] == want  # rewritten whole and valid


def entry_stamp(index_text: str, f: Path, stale: bool = False) -> str:
    """The ' dev ino size mtime ctime ' part of f's line in index_text (stale) or of f as it is now."""
    if stale:
        line = next(ln for ln in index_text.splitlines()[1:] if ln.endswith(os.path.realpath(f)))
        return " " + " ".join(line.split(" ", 6)[1:6]) + " "
    st = f.stat()
    return f" {st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} "


def test_the_engine_tags_saved_state_through_the_index(tmp_path):
    """Saving prompt state needs the model's identity: the Engine's first save records the model
    in the index, so the next process's load does not hash the model again."""
    cache, state = tmp_path / "cache", tmp_path / "p.festate"
    model = default_model_path()
    code = ("from finllm_edge import Engine\n"
            f"with Engine({str(model)!r}, n_ctx=256, n_threads=1) as e:\n"
            f"    print(e.save_state({str(state)!r}, prompt='You are a finance assistant.'))")
    n = int(fresh_process(cache, code))
    assert n > 0
    want = hashlib.sha256(model.read_bytes()).hexdigest()
    assert entry(cache, model)[0] == want
    code = ("from finllm_edge import Engine\n"
            f"with Engine({str(model)!r}, n_ctx=256, n_threads=1) as e:\n"
            f"    print(e.load_state({str(state)!r}))")
    assert int(fresh_process(cache, code)) == n
