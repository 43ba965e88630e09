"""--out belongs to the user: convert writes only into a new/empty folder or one with its own marker, never
deletes a file it did not write, refuses a foreign non-empty folder (or replaces only what it lists, with
--force), checks writability before touching anything, and a refused run leaves a finished run as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch  # noqa: E402,F401  (the convert extra: scripts/bootstrap.sh installs it; never skipped)

from convert_helpers import make_adapter, make_tiny_base, smollm2_tokenizer_dir  # noqa: E402
from finllm_edge_convert import outdir  # noqa: E402
from finllm_edge_convert.errors import (  # noqa: E402
    AdapterMismatchError,
    OutputFolderError,
    OutputNotWritableError,
)
from finllm_edge_convert.pipeline import ConvertOptions, convert  # noqa: E402

pytestmark = [pytest.mark.convert, pytest.mark.slow]


def opts(base, lora, out, **kw):
    kw.setdefault("quants", ["q8_0"])
    return ConvertOptions(base=base, lora=lora, out=out, progress=False, parity=False, cross_check=False,
                          eval_chunks=1, eval_ctx=128, task_passages=1, **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("outdir")
    model = make_tiny_base(root / "base", "llama", smollm2_tokenizer_dir())
    make_adapter(model, root / "lora")
    make_tiny_base(root / "wide", "llama", smollm2_tokenizer_dir(), hidden=96)
    res = convert(opts(root / "base", root / "lora", root / "done"))
    return root, res


def fresh_copy(finished, dst: Path) -> Path:
    root, _ = finished
    shutil.copytree(root / "done", dst)
    return dst


def test_finished_run_carries_its_marker(finished):
    root, res = finished
    m = outdir.read_marker(res.out)
    assert m["state"] == "finished" and m["foreign"] == []
    assert {"manifest.json", "model-f16.gguf", "model-q8_0.gguf", "merged/model.safetensors"} <= set(m["files"])
    on_disk = {p for p in outdir.tree_state(res.out) if p != outdir.MARKER}
    assert set(m["files"]) == on_disk


def test_foreign_non_empty_folder_is_refused_and_left_alone(finished, tmp_path):
    root, _ = finished
    out = tmp_path / "mine"
    (out / "data").mkdir(parents=True)
    (out / "data" / "draft.partial-1.txt").write_text("my draft")
    (out / "manifest.json").write_text('{"mine": true}')
    before = outdir.tree_state(out)
    with pytest.raises(OutputFolderError, match=r"not empty \(2 file\(s\).*not made by finllm-edge convert.*--force.*"
                                                r"replace 1 file\(s\) \(manifest.json\)"):
        convert(opts(root / "base", root / "lora", out))
    assert outdir.tree_state(out) == before


def test_force_replaces_only_the_listed_files(finished, tmp_path):
    root, _ = finished
    out = tmp_path / "mine"
    (out / "data").mkdir(parents=True)
    (out / "data" / "draft.partial-1.txt").write_text("my draft")   # looks like a partial file; it is the user's
    (out / "manifest.json").write_text('{"mine": true}')
    (out / "model-q4_0.gguf").write_bytes(b"someone else's stale file")
    res = convert(opts(root / "base", root / "lora", out, force=True))
    assert (out / "data" / "draft.partial-1.txt").read_text() == "my draft"
    assert (out / "model-q4_0.gguf").read_bytes() == b"someone else's stale file"   # not ours: never deleted
    assert json.loads((out / "manifest.json").read_text())["architecture"] == "llama"
    assert any("--force: replaced 1 file(s) convert did not write: manifest.json" in n for n in res.notes)
    m = outdir.read_marker(out)
    assert "data/draft.partial-1.txt" in m["foreign"] and "data/draft.partial-1.txt" not in m["files"]
    # the next run into this folder needs no --force and still leaves the user's files alone
    convert(opts(root / "base", root / "lora", out, quants=[]))
    assert (out / "data" / "draft.partial-1.txt").read_text() == "my draft"
    assert (out / "model-q4_0.gguf").exists()


def test_rerun_removes_its_own_stale_files_and_keeps_the_users(finished, tmp_path):
    root, _ = finished
    out = fresh_copy(finished, tmp_path / "out")
    (out / "data").mkdir()
    (out / "data" / "draft.partial-1.txt").write_text("my draft")
    (out / "model-f16.gguf.partial-999").write_bytes(b"x")             # our own leftover: removed
    res = convert(opts(root / "base", root / "lora", out, quants=[]))
    assert not (out / "model-q8_0.gguf").exists()                       # the earlier run's, not asked for now
    assert not (out / "model-f16.gguf.partial-999").exists()
    assert (out / "data" / "draft.partial-1.txt").read_text() == "my draft"
    assert any("removed 1 partial file(s)" in n for n in res.notes)


def test_refused_rerun_leaves_a_finished_folder_byte_identical(finished, tmp_path):
    root, _ = finished
    out = fresh_copy(finished, tmp_path / "out")
    before = outdir.tree_state(out)
    with pytest.raises(AdapterMismatchError):
        convert(opts(root / "wide", root / "lora", out))               # wrong base
    assert outdir.tree_state(out) == before                             # manifest.json included


def test_foreign_file_where_convert_writes_in_its_own_folder(finished, tmp_path):
    root, _ = finished
    out = fresh_copy(finished, tmp_path / "out")
    (out / "quality.md").unlink()
    m = outdir.read_marker(out)
    m["files"].remove("quality.md")
    (out / outdir.MARKER).write_text(json.dumps(m))
    (out / "quality.md").write_text("my notes")                         # the user's now
    before = outdir.tree_state(out)
    with pytest.raises(OutputFolderError, match="did not write where this run writes: quality.md"):
        convert(opts(root / "base", root / "lora", out))
    assert outdir.tree_state(out) == before


@pytest.mark.parametrize("where", ["/proc/sys/fe-convert-out", "/proc/sys"])
def test_read_only_out_is_refused_before_anything(finished, where):
    """/proc/sys is read-only for everyone, root included (chmod does not bind root)."""
    root, _ = finished
    with pytest.raises(OutputNotWritableError, match="not writable"):
        convert(opts(root / "base", root / "lora", Path(where)))


def test_read_only_folder_reported_without_traceback(finished, tmp_path, monkeypatch, capsys):
    from finllm_edge.lab.cli import main

    root, _ = finished
    out = tmp_path / "ro"
    out.mkdir()

    def erofs(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(outdir.tempfile, "mkstemp", erofs)
    rc = main(["convert", "--base", str(root / "base"), "--lora", str(root / "lora"), "--out", str(out),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0 and "is not writable (Read-only file system)" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_out_under_a_file(finished, tmp_path, capsys):
    from finllm_edge.lab.cli import main

    root, _ = finished
    (tmp_path / "report.pdf").write_bytes(b"%PDF")
    rc = main(["convert", "--base", str(root / "base"), "--lora", str(root / "lora"), "--out",
               str(tmp_path / "report.pdf" / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc != 0 and "report.pdf is a file, not a folder" in err and "Traceback" not in err
    assert (tmp_path / "report.pdf").read_bytes() == b"%PDF"
