"""The GGUF pre-flight validators (Python and C) against the generated bad-file corpus."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_bad_gguf as gen  # noqa: E402
from gguf_tools import ROOT, build_c_validator, run_c_validator, sanitizer_report  # noqa: E402

from finllm_edge.errors import CorruptModelError, ModelNotFoundError
from finllm_edge.gguf_validate import GGML_TYPES, GGUFValidationError, validate_file
import finllm_edge.gguf_validate as gv
from finllm_edge.models import default_model_path

# Every defect class the issue names must stay in the corpus.
REQUIRED_CASES = [
    "bad_magic", "version_1", "version_4", "tensor_count_huge", "kv_count_huge",
    "string_length_past_eof", "array_length_past_eof", "unknown_value_type", "nested_array",
    "tokens_array_of_ints", "duplicate_key", "duplicate_tensor_name", "n_dims_zero", "n_dims_five",
    "dim_zero", "dims_overflow", "bytes_overflow", "ggml_type_unknown", "not_multiple_of_block",
    "data_past_eof", "offset_huge", "offset_misaligned", "offset_overlap", "alignment_zero",
    "alignment_three", "architecture_missing", "missing_llama.block_count",
    "missing_llama.context_length", "missing_llama.embedding_length",
    "missing_llama.attention.head_count", "tokens_duplicate", "tokens_empty_collides",
    "tokenizer_unsupported", "tokens_equal_up_to_nul",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("bad_gguf")
    manifest = gen.write_corpus(out, smollm2=default_model_path())
    return out, manifest


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> list[Path]:
    tiny = gen.write_valid_tiny(tmp_path_factory.mktemp("valid") / "tiny.gguf")
    return [tiny, default_model_path()]


@pytest.fixture(scope="module")
def c_exe(tmp_path_factory) -> Path:
    return build_c_validator(tmp_path_factory.mktemp("cbuild"))


def _paths(corpus) -> tuple[list[str], list[Path]]:
    out, manifest = corpus
    names = sorted(manifest)
    return names, [out / f"{n}.gguf" for n in names]


def test_corpus_covers_every_defect_class(corpus):
    _, manifest = corpus
    assert not [c for c in REQUIRED_CASES if c not in manifest]
    assert sum(n.startswith("trunc_tiny_") for n in manifest) > 150
    assert sum(n.startswith("trunc_smollm2_") for n in manifest) > 30
    on_disk = json.loads((corpus[0] / "manifest.json").read_text())
    assert on_disk == manifest


def test_python_rejects_every_corpus_file_naming_the_field(corpus):
    names, paths = _paths(corpus)
    wrong = {}
    for name, path in zip(names, paths):
        with pytest.raises(GGUFValidationError) as exc:
            validate_file(path)
        e = exc.value
        assert isinstance(e, CorruptModelError)
        assert f"'{e.field}'" in str(e) and f"byte {e.offset}" in str(e) and str(path) in str(e)
        if e.field != corpus[1][name]:
            wrong[name] = (corpus[1][name], e.field, e.reason)
    assert not wrong


def test_c_rejects_every_corpus_file_naming_the_field(corpus, c_exe):
    names, paths = _paths(corpus)
    verdicts, proc = run_c_validator(c_exe, paths)
    assert proc.returncode == 1, proc.stderr
    assert len(verdicts) == len(paths)
    wrong = {n: (corpus[1][n], v.field, v.message) for n, v in zip(names, verdicts)
             if v.code != -2 or v.field != corpus[1][n]}
    assert not wrong
    assert all(f"'{v.field}' at byte {v.offset}" in v.message for v in verdicts)


def test_python_and_c_agree_on_field_and_offset(corpus, valid_files, c_exe):
    _, paths = _paths(corpus)
    paths = paths + valid_files
    verdicts, _ = run_c_validator(c_exe, paths)
    diffs = []
    for path, v in zip(paths, verdicts):
        try:
            validate_file(path)
            py = (0, -1, "-")
        except GGUFValidationError as e:
            py = (-2, e.offset, e.field)
        if py != (v.code, v.offset, v.field):
            diffs.append((path.name, py, (v.code, v.offset, v.field)))
    assert not diffs


def test_sanitized_c_build_runs_the_corpus_clean(corpus, valid_files, tmp_path, c_exe):
    exe = build_c_validator(tmp_path, sanitize=True)
    _, paths = _paths(corpus)
    verdicts, proc = run_c_validator(exe, paths + valid_files, sanitize=True)
    assert sanitizer_report(proc.stderr) is None, proc.stderr[-4000:]
    assert proc.returncode == 1  # not 98/99 (sanitizer exit codes), not a signal
    plain, _ = run_c_validator(c_exe, paths + valid_files)
    assert verdicts == plain


def test_valid_files_are_accepted_by_both(valid_files, c_exe):
    import gguf

    for path in valid_files:
        info = validate_file(path)
        ref = gguf.GGUFReader(str(path))
        assert info.architecture == "llama"
        assert info.n_tensors == len(ref.tensors)
        assert info.data_offset == ref.data_offset
    verdicts, proc = run_c_validator(c_exe, valid_files)
    assert proc.returncode == 0 and [v.code for v in verdicts] == [0, 0], proc.stdout


def test_generator_writes_what_the_gguf_package_writes(tmp_path):
    ref = tmp_path / "ref.gguf"
    gen.write_tiny_with_gguf_package(ref)
    assert ref.read_bytes() == gen.build(gen.tiny_llama_spec()).data


def test_llama_cpp_loads_the_valid_tiny_model(valid_files):
    """The corpus base is a real model for the pinned llama.cpp, so defects are the only defects."""
    import llama_cpp as lc

    lc.llama_backend_init()
    params = lc.llama_model_default_params()
    model = lc.llama_model_load_from_file(str(valid_files[0]).encode(), params)
    assert model, "llama.cpp rejected the valid tiny model"
    lc.llama_model_free(model)


def test_missing_and_unreadable_files(tmp_path, c_exe):
    with pytest.raises(ModelNotFoundError):
        validate_file(tmp_path / "nope.gguf")
    with pytest.raises(CorruptModelError):
        validate_file(tmp_path)  # a directory
    verdicts, _ = run_c_validator(c_exe, [tmp_path / "nope.gguf", tmp_path])
    assert [v.code for v in verdicts] == [-1, -1]


def test_ggml_type_table_matches_the_pinned_llama_cpp():
    """Ids and block sizes against gguf-py of the pinned llama.cpp tree, loaded by path.

    (The installed gguf 0.19.0 still says Q8_1 blocks are 40 bytes; ggml-common.h asserts 36.)
    """
    import importlib.util

    from finllm_edge.native.fetch import llama_src_dir

    path = llama_src_dir(progress=False) / "gguf-py/gguf/constants.py"
    spec = importlib.util.spec_from_file_location("pinned_gguf_constants", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pinned = {int(t): (t.name.lower(), blck, size) for t, (blck, size) in mod.GGML_QUANT_SIZES.items()}
    assert {i: (n.lower(), b, s) for i, (n, b, s) in GGML_TYPES.items()} == pinned
    assert {int(t) for t in mod.GGMLQuantizationType} == set(GGML_TYPES)


def test_c_tables_and_caps_match_python():
    src = (ROOT / "native/src/gguf_validate.c").read_text()
    body = src.split("GGML_TYPES[] = {")[1].split("};")[0]
    entries = re.findall(r"\{(?:\"(\w+)\"|0), (\d+), (\d+)\}", body)
    c_types = {i: (n, int(b), int(s)) for i, (n, b, s) in enumerate(entries) if n}
    assert c_types == GGML_TYPES
    hdr = (ROOT / "native/src/gguf_validate.h").read_text()
    for name, value in [("MAX_TENSORS", gv.MAX_TENSORS), ("MAX_KV", gv.MAX_KV), ("MAX_KEY_LEN", gv.MAX_KEY_LEN),
                        ("MAX_TENSOR_NAME", gv.MAX_TENSOR_NAME), ("MAX_TOKEN_LEN", gv.MAX_TOKEN_LEN)]:
        assert re.search(rf"#define FE_GGUF_{name}\s+{value}\b", hdr), name
    assert "(64ull * 1024 * 1024)" in hdr and gv.MAX_STRING_LEN == 64 * 1024 * 1024
    assert "FE_GGUF_MAX_ARRAY_LEN   (1ull << 24)" in hdr and gv.MAX_ARRAY_LEN == 1 << 24
    assert "FE_GGUF_MAX_TOKENS      (1ull << 20)" in hdr and gv.MAX_TOKENS == 1 << 20
    toks = re.search(r"TOKENIZERS\[\] = \{([^}]*)\}", src).group(1)
    assert tuple(re.findall(r'"(\w+)"', toks)) == gv.SUPPORTED_TOKENIZERS
    archs = re.search(r"ARCHS\[\] = \{([^}]*)\}", src).group(1)
    assert tuple(re.findall(r'"(\w+)"', archs)) == gv.SUPPORTED_ARCHS


def test_validation_reads_headers_only_and_is_fast(valid_files):
    import time

    t0 = time.perf_counter()
    validate_file(valid_files[1])
    assert time.perf_counter() - t0 < 2.0  # a 100 MB model: only its ~1.8 MB header is read
