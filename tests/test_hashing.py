"""finllm_edge.hashing.sha256_file_cached: a file is hashed once across processes, and again after
any change; the index it keeps is bounded and a damaged one is never trusted."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from finllm_edge import hashing


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = hashing.sha256_file

    def count(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(hashing, "sha256_file", count)
    return calls


def test_hashed_once_then_again_after_a_change(tmp_path, counted):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"weights" * 1000)
    idx = tmp_path / "idx"
    first = hashing.sha256_file_cached(f, idx)
    assert first == hashlib.sha256(f.read_bytes()).hexdigest()
    assert hashing.sha256_file_cached(f, idx) == first
    assert hashing.sha256_file_cached(tmp_path / "." / "model.gguf", idx) == first  # same real path
    assert len(counted) == 1
    st = f.stat()
    f.write_bytes(b"WEIGHTS" * 1000)  # same size, new content
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime put back: the ctime still moved
    assert hashing.sha256_file_cached(f, idx) == hashlib.sha256(b"WEIGHTS" * 1000).hexdigest()
    assert len(counted) == 2
    os.replace(tmp_path / "model.gguf", tmp_path / "old.gguf")
    (tmp_path / "model.gguf").write_bytes(b"other" * 10)  # replaced by another file
    assert hashing.sha256_file_cached(f, idx) == hashlib.sha256(b"other" * 10).hexdigest()


@pytest.mark.parametrize("content", [
    "not json", "[]", '{"version": 2, "entries": {}}', '{"version": 1, "entries": []}',
    "BAD_ENTRY", "BAD_HEX", "HUGE"])
def test_a_damaged_index_is_ignored(tmp_path, counted, content):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x" * 100)
    real = os.path.realpath(f)
    idx = tmp_path / "idx"
    idx.mkdir()
    st = f.stat()
    stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    if content == "BAD_ENTRY":
        content = json.dumps({"version": 1, "entries": {real: {"stamp": stamp[:4], "sha256": "0" * 64}}})
    elif content == "BAD_HEX":
        content = json.dumps({"version": 1, "entries": {real: {"stamp": stamp, "sha256": "Z" * 64}}})
    elif content == "HUGE":  # a valid-looking wrong entry in a file past the size bound
        content = json.dumps({"version": 1, "entries": {real: {"stamp": stamp, "sha256": "0" * 64}},
                              "pad": "x" * hashing.INDEX_MAX_BYTES})
    (idx / hashing.INDEX_NAME).write_text(content)
    assert hashing.sha256_file_cached(f, idx) == hashlib.sha256(b"x" * 100).hexdigest()
    assert len(counted) == 1
    data = json.loads((idx / hashing.INDEX_NAME).read_text())  # rewritten whole and valid
    assert data["version"] == 1 and data["entries"][real]["stamp"] == stamp


def test_the_index_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "INDEX_MAX_ENTRIES", 3)
    idx = tmp_path / "idx"
    for i in range(6):
        f = tmp_path / f"m{i}.gguf"
        f.write_bytes(bytes([i]) * 10)
        hashing.sha256_file_cached(f, idx)
    entries = json.loads((idx / hashing.INDEX_NAME).read_text())["entries"]
    assert sorted(os.path.basename(k) for k in entries) == ["m3.gguf", "m4.gguf", "m5.gguf"]
