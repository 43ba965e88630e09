"""finllm_edge.fileio: the one crash-safe write helper (temp file, fsync, rename, fsync folder)."""

import json
import os
import subprocess
import sys

import pytest

from finllm_edge import fileio
from finllm_edge.fileio import (
    PARTIAL_TAG,
    atomic_open,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_partials,
    commit_dir,
)


def partials(folder):
    return sorted(p.name for p in folder.rglob(f"*{PARTIAL_TAG}*"))


def test_writes_create_and_replace(tmp_path):
    p = tmp_path / "sub" / "a.txt"
    atomic_write_text(p, "one\n")
    assert p.read_text() == "one\n"
    atomic_write_text(p, "two\n")
    assert p.read_text() == "two\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    atomic_write_json(tmp_path / "c.json", {"k": [1, 2]})
    assert (tmp_path / "c.json").read_text().endswith("\n")
    assert json.loads((tmp_path / "c.json").read_text()) == {"k": [1, 2]}
    assert partials(tmp_path) == []
    assert (p.stat().st_mode & 0o777) == 0o666 & ~_umask()  # an ordinary file, not mkstemp's 0600


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_an_error_keeps_the_old_file_and_leaves_no_partial(tmp_path):
    p = tmp_path / "a.json"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(p, "w") as f:
            f.write("half of the new")
            raise RuntimeError("boom")
    assert p.read_text() == "old" and partials(tmp_path) == []
    with pytest.raises(TypeError):
        atomic_write_json(p, {"not serialisable": object()})
    assert p.read_text() == "old" and partials(tmp_path) == []


def test_a_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "a.txt"
    p.write_text("old")

    def no_replace(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(fileio.os, "replace", no_replace)
    with pytest.raises(OSError, match="disk went away"):
        atomic_write_text(p, "new")
    assert p.read_text() == "old" and partials(tmp_path) == []


def test_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(fileio.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    atomic_write_text(tmp_path / "a.txt", "x")
    assert calls == ["fsync", "replace", "fsync"]  # file, rename, folder


def test_a_killed_writer_leaves_the_old_file_and_a_partial_that_clean_partials_removes(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    code = ("import os, sys; from finllm_edge.fileio import atomic_open\n"
            "with atomic_open(sys.argv[1], 'w') as f:\n"
            "    f.write('half'); f.flush(); os._exit(9)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert p.read_text() == "old"
    assert len(partials(tmp_path)) == 1 and partials(tmp_path)[0].startswith("a.txt" + PARTIAL_TAG)
    (tmp_path / ("d" + PARTIAL_TAG + "x")).mkdir()
    (tmp_path / ("d" + PARTIAL_TAG + "x") / "inner.bin").write_bytes(b"1")
    removed = clean_partials(tmp_path)
    assert len(removed) == 2 and partials(tmp_path) == [] and p.read_text() == "old"


def test_atomic_path_for_tools_that_write_by_name(tmp_path):
    out = tmp_path / "model.gguf"
    with atomic_path(out) as tmp:
        assert not tmp.exists() and tmp.parent == out.parent
        tmp.write_bytes(b"GGUF")
    assert out.read_bytes() == b"GGUF"
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(tmp_path / "never.gguf"):
            pass
    assert not (tmp_path / "never.gguf").exists() and partials(tmp_path) == []


def test_partial_names_are_unique(tmp_path):
    assert fileio.partial_name(tmp_path / "a") != fileio.partial_name(tmp_path / "a")


def test_atomic_open_refuses_append_and_read_modes(tmp_path):
    for mode in ("a", "r+", "ab"):
        with pytest.raises(ValueError, match="whole files"):
            with atomic_open(tmp_path / "x", mode):
                pass


def test_commit_dir_replaces_a_folder_whole(tmp_path):
    final = tmp_path / "bundle"
    final.mkdir()
    (final / "old.txt").write_text("old")
    new = tmp_path / "bundle.tmp"
    (new / "bin").mkdir(parents=True)
    (new / "bin" / "tool").write_text("new")
    commit_dir(new, final)
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*")) == ["bin", "bin/tool"]
    assert not new.exists() and partials(tmp_path) == []
    other = tmp_path / "fresh.tmp"
    other.mkdir()
    commit_dir(other, tmp_path / "fresh")
    assert (tmp_path / "fresh").is_dir()
