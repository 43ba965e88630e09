"""The shape promised to users: light runtime import, a CLI that teaches, no vendored code."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from finllm_edge import pins
from finllm_edge.errors import FetchError

ROOT = Path(__file__).resolve().parent.parent


def test_runtime_import_does_not_pull_torch():
    code = ("import sys, finllm_edge; finllm_edge.default_model_path(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_help_lists_every_verb():
    out = subprocess.run([sys.executable, "-m", "finllm_edge.lab.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for verb in ("convert", "run", "bench", "report", "emulate", "device", "native"):
        assert verb in out


def test_no_llama_cpp_or_ggml_source_is_tracked():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = [f for f in files if "/ggml" in f or f.startswith(("ggml", "vendor/")) or "llama.cpp/" in f]
    assert offenders == []
    grep = subprocess.run(["git", "grep", "-l", "The ggml authors", "--", ".", ":!*.md", ":!tests/test_packaging.py"],
                          cwd=ROOT, capture_output=True, text=True)
    assert grep.stdout == ""


def test_wheel_pin_matches_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    assert f'"llama-cpp-python=={pins.LLAMA_CPP_PYTHON_VERSION}"' in text


def test_fetch_rejects_a_tampered_sdist(tmp_path, monkeypatch):
    from finllm_edge.native import fetch

    monkeypatch.setenv("FINLLM_EDGE_CACHE", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    bad = tmp_path / "downloads" / pins.SDIST_FILENAME
    bad.write_bytes(b"not the sdist")
    with pytest.raises(FetchError, match="expected " + pins.SDIST_SHA256):
        fetch.sdist_path(progress=False)
    # the bad file is moved aside, so the next run downloads a fresh copy
    assert not bad.exists() and bad.with_name(bad.name + ".bad").exists()


def test_fetched_tree_is_the_pinned_one():
    from finllm_edge.native import fetch

    src = fetch.llama_src_dir(progress=False)
    ident = fetch.llama_identity()
    assert ident["llama_cpp_python"] == pins.LLAMA_CPP_PYTHON_VERSION
    assert len(ident["llama_cpp_commit"]) == 40
    assert (src / "include" / "llama.h").exists()
    sdist = fetch.sdist_path(progress=False)
    assert hashlib.sha256(sdist.read_bytes()).hexdigest() == pins.SDIST_SHA256


def test_wheel_carries_the_variant_table_and_the_variant_libraries(tmp_path):
    """pyproject package-data: finllm_edge/_lib/variants.json (a symlink to native/variants.json
    in the checkout, a real file in the wheel) and _lib/<variant>/libfinllm_edge.so, which
    `finllm-edge native build` copies there (git-ignored)."""
    import json
    import shutil
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
    shutil.copytree(ROOT / "finllm_edge", src / "finllm_edge", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "convert", src / "convert", ignore=ignore)
    (src / "native").mkdir()
    shutil.copy2(ROOT / "native" / "variants.json", src / "native" / "variants.json")
    assert (src / "finllm_edge" / "_lib" / "variants.json").is_symlink()
    fake = src / "finllm_edge" / "_lib" / "x86-64-avx2" / "libfinllm_edge.so"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_bytes(b"\x7fELF not really")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("finllm_edge-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "finllm_edge/_lib/x86-64-avx2/libfinllm_edge.so" in names
        table = json.loads(z.read("finllm_edge/_lib/variants.json"))
    assert table == json.loads((ROOT / "native" / "variants.json").read_text())
