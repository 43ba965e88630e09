"""Bad ONNX folders give typed errors before anything loads them, and nothing outside is read."""

from __future__ import annotations

import json
import os
import shutil

import onnx
import pytest

from finllm_edge.errors import CorruptModelError, ModelNotFoundError
from finllm_edge.onnx_engine import OnnxEngine
from finllm_edge.onnx_validate import validate_model_dir
from finllm_edge_convert.onnx_export import export_onnx
from onnx_support import tiny_hf_dir

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("good") / "m"
    export_onnx(tiny_hf_dir("llama"), out, checks=False)
    return out


@pytest.fixture
def model(good, tmp_path):
    dst = tmp_path / "inside" / "m"
    shutil.copytree(good, dst)
    return dst


def _rewrite_external(folder, **changes):
    """Change the external_data entries of the largest external tensor; return its name."""
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    tensor = max((t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL),
                 key=lambda t: int({e.key: e.value for e in t.external_data}["length"]))
    for entry in tensor.external_data:
        if entry.key in changes:
            entry.value = str(changes[entry.key])
    onnx.save(proto, str(folder / "model.onnx"))
    return tensor.name


def _both_raise(folder, err, match):
    with pytest.raises(err, match=match):
        validate_model_dir(folder)
    with pytest.raises(err, match=match):
        OnnxEngine(folder)


def test_good_folder_passes(model):
    info = validate_model_dir(model)
    assert info.precision == "int4" and info.external_files == [model / "model.onnx.data"]


def test_missing_folder_and_file_instead_of_folder(tmp_path, model):
    _both_raise(tmp_path / "nope", ModelNotFoundError, "not found")
    _both_raise(model / "model.onnx", ModelNotFoundError, "is a file")


def test_folder_without_genai_config(model):
    (model / "genai_config.json").unlink()
    _both_raise(model, ModelNotFoundError, "no genai_config.json")


def test_broken_genai_config(model):
    (model / "genai_config.json").write_text("{not json")
    _both_raise(model, CorruptModelError, "not a valid genai config")


def test_decoder_filename_escaping(model):
    cfg = json.loads((model / "genai_config.json").read_text())
    cfg["model"]["decoder"]["filename"] = "../m2/model.onnx"
    (model / "genai_config.json").write_text(json.dumps(cfg))
    _both_raise(model, CorruptModelError, r"climbs out")


@pytest.mark.parametrize("keep", [0, 1000, 0.5])
def test_truncated_onnx(model, keep):
    path = model / "model.onnx"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    _both_raise(model, CorruptModelError, "truncated|no graph|checker")


def test_missing_external_data(model):
    (model / "model.onnx.data").unlink()
    _both_raise(model, ModelNotFoundError, "missing")


def test_truncated_external_data(model):
    path = model / "model.onnx.data"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    _both_raise(model, CorruptModelError, "past the end")


def test_external_offset_past_end(model):
    _rewrite_external(model, offset=10**12)
    _both_raise(model, CorruptModelError, "past the end")


def test_external_length_mismatch(model):
    _rewrite_external(model, length=16)
    _both_raise(model, CorruptModelError, "does not match its shape")


def test_absolute_location(model, tmp_path):
    outside = tmp_path / "outside.data"
    shutil.copy(model / "model.onnx.data", outside)  # a readable file: a naive loader would use it
    _rewrite_external(model, location=str(outside))
    _both_raise(model, CorruptModelError, "absolute path")


def test_dotdot_location(model, tmp_path):
    shutil.copy(model / "model.onnx.data", model.parent / "outside.data")
    _rewrite_external(model, location="../outside.data")
    _both_raise(model, CorruptModelError, "climbs out")


def test_symlink_out_of_folder(model, tmp_path):
    outside = tmp_path / "elsewhere.data"
    shutil.move(model / "model.onnx.data", outside)
    os.symlink(outside, model / "model.onnx.data")
    _both_raise(model, CorruptModelError, "outside")


def test_no_read_outside_folder(model, tmp_path, monkeypatch):
    """With a location pointing out, the validator opens nothing but files inside the folder."""
    import builtins

    outside = tmp_path / "outside.data"
    shutil.copy(model / "model.onnx.data", outside)
    _rewrite_external(model, location=str(outside))
    opened = []
    real_open = builtins.open

    def spy(file, *a, **k):
        opened.append(os.path.realpath(file) if isinstance(file, (str, os.PathLike)) else file)
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", spy)
    with pytest.raises(CorruptModelError):
        validate_model_dir(model)
    root = os.path.realpath(model)
    assert opened and all(isinstance(p, str) and p.startswith(root + os.sep) for p in opened), opened
