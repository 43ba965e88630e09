"""The GGUF pre-flight validator (one implementation, in C) against the generated bad-file corpus:
standalone (tests/c driver, plain and with ASan+UBSan) and inside the core library through the
Python binding (finllm_edge.gguf_validate.validate_gguf -> fe_gguf_preflight)."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_bad_gguf as gen  # noqa: E402
from finllm_edge.errors import CorruptModelError, ModelNotFoundError
from finllm_edge.gguf_validate import GGUFValidationError, validate_gguf
from finllm_edge.models import default_model_path
from gguf_tools import ROOT, build_c_validator, run_c_validator, sanitizer_report  # noqa: E402

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
    # semantic values that abort llama.cpp or make it run nonsense (native/src/ASSERTS.md)
    *gen.SEMANTIC,
]
# fe_gguf_preflight checks the 24-byte header itself first, in its own words.
HEADER_FIELDS = {"magic", "version", "tensor_count", "kv_count"}


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


def test_core_rejects_every_corpus_file_naming_the_field(corpus):
    """Through the library every load uses: CorruptModelError naming the field and its offset."""
    names, paths = _paths(corpus)
    wrong = {}
    for name, path in zip(names, paths):
        with pytest.raises(GGUFValidationError) as exc:
            validate_gguf(path)
        e = exc.value
        assert isinstance(e, CorruptModelError) and str(path) in str(e)
        if corpus[1][name] in HEADER_FIELDS and e.field is None:
            continue
        if e.field != corpus[1][name] or f"'{e.field}' at byte {e.offset}" not in str(e):
            wrong[name] = (corpus[1][name], e.field, str(e)[:200])
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


def test_core_and_standalone_build_agree(corpus, valid_files, c_exe):
    """The library's copy of the validator and the standalone build are the same code."""
    _, paths = _paths(corpus)
    paths = paths + valid_files
    verdicts, _ = run_c_validator(c_exe, paths)
    diffs = []
    for path, v in zip(paths, verdicts):
        try:
            validate_gguf(path)
            core = (0, "-")
        except GGUFValidationError as e:
            core = (-2, e.field or v.field)
        if core != (v.code, v.field):
            diffs.append((path.name, core, (v.code, v.field)))
    assert not diffs


def test_sanitized_c_build_runs_the_corpus_clean(corpus, valid_files, tmp_path, c_exe):
    exe = build_c_validator(tmp_path, sanitize=True)
    _, paths = _paths(corpus)
    verdicts, proc = run_c_validator(exe, paths + valid_files, sanitize=True)
    assert sanitizer_report(proc.stderr) is None, proc.stderr[-4000:]
    assert proc.returncode == 1  # not 98/99 (sanitizer exit codes), not a signal
    plain, _ = run_c_validator(c_exe, paths + valid_files)
    assert verdicts == plain


def test_valid_files_are_accepted(valid_files, c_exe):
    for path in valid_files:
        assert validate_gguf(path) is None
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
        validate_gguf(tmp_path / "nope.gguf")
    with pytest.raises(CorruptModelError):
        validate_gguf(tmp_path)  # a directory
    verdicts, _ = run_c_validator(c_exe, [tmp_path / "nope.gguf", tmp_path])
    assert [v.code for v in verdicts] == [-1, -1]


def _c_ggml_types() -> dict[int, tuple[str, int, int]]:
    src = (ROOT / "native/src/gguf_validate.c").read_text()
    body = src.split("GGML_TYPES[] = {")[1].split("};")[0]
    entries = re.findall(r"\{(?:\"(\w+)\"|0), (\d+), (\d+)\}", body)
    return {i: (n.lower(), int(b), int(s)) for i, (n, b, s) in enumerate(entries) if n}


def test_ggml_type_table_matches_the_pinned_llama_cpp():
    """Ids and block sizes of the C table against gguf-py of the pinned llama.cpp tree.

    (The installed gguf 0.19.0 still says Q8_1 blocks are 40 bytes; ggml-common.h asserts 36.)
    """
    import importlib.util

    from finllm_edge.native.fetch import llama_src_dir

    path = llama_src_dir(progress=False) / "gguf-py/gguf/constants.py"
    spec = importlib.util.spec_from_file_location("pinned_gguf_constants", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pinned = {int(t): (t.name.lower(), blck, size) for t, (blck, size) in mod.GGML_QUANT_SIZES.items()}
    assert _c_ggml_types() == pinned
    assert {int(t) for t in mod.GGMLQuantizationType} == set(pinned)


def test_the_python_module_has_no_rules_of_its_own():
    """One implementation per rule: finllm_edge/gguf_validate.py only binds fe_gguf_preflight."""
    src = (ROOT / "finllm_edge/gguf_validate.py").read_text()
    assert "fe_gguf_preflight" in src and "import struct" not in src and len(src.splitlines()) < 80


def test_validation_reads_headers_only_and_is_fast(valid_files):
    import time

    t0 = time.perf_counter()
    validate_gguf(valid_files[1])
    assert time.perf_counter() - t0 < 2.0  # a 100 MB model: only its ~1.8 MB header is read


def _graft_vocab(vocab_gguf: Path, out: Path) -> str:
    """A 1-layer llama model carrying a real vocabulary file's tokenizer keys, copied byte for
    byte; the data section is sparse zeros (the validator never reads it)."""
    import struct

    buf = vocab_gguf.read_bytes()
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    pos, raw, n_vocab, model = 24, [], 0, ""

    def skip(t: int, p: int) -> int:
        return p + 8 + struct.unpack_from("<Q", buf, p)[0] if t == 8 else p + sizes[t]

    for _ in range(struct.unpack_from("<Q", buf, 16)[0]):  # a plain scanner: GGUFReader is slow here
        start, klen = pos, struct.unpack_from("<Q", buf, pos)[0]
        key = buf[pos + 8:pos + 8 + klen].decode()
        pos += 8 + klen
        vtype = struct.unpack_from("<I", buf, pos)[0]
        pos += 4
        if vtype == 9:
            elem, count = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if elem == 8:
                for _ in range(count):
                    pos = skip(8, pos)
            else:
                pos += count * sizes[elem]
            n_vocab = count if key == "tokenizer.ggml.tokens" else n_vocab
        else:
            if key == "tokenizer.ggml.model":
                model = buf[pos + 8:pos + 8 + struct.unpack_from("<Q", buf, pos)[0]].decode()
            pos = skip(vtype, pos)
        if key.startswith("tokenizer."):
            raw.append(buf[start:pos])
    e, f = gen.N_EMBD, gen.N_FF
    kvs = [kv for kv in gen.tiny_llama_spec().kvs if not str(kv.key).startswith("tokenizer.")]
    head = gen.build(gen.Spec(kvs, [gen.Tensor("x", [32], gen.F32_T)])).data
    head = bytearray(head[:next(i for i in range(24, len(head)) if head[i:i + 9] == b"\x01\0\0\0\0\0\0\0x")])
    tensors = [("token_embd.weight", [e, n_vocab], 1, 2), ("output_norm.weight", [e], 0, 4),
               ("output.weight", [e, n_vocab], 1, 2), ("blk.0.attn_norm.weight", [e], 0, 4)]
    tensors += [(f"blk.0.attn_{n}.weight", [e, e], 0, 4) for n in ("q", "k", "v", "output")]
    tensors += [("blk.0.ffn_norm.weight", [e], 0, 4), ("blk.0.ffn_gate.weight", [e, f], 0, 4),
                ("blk.0.ffn_up.weight", [e, f], 0, 4), ("blk.0.ffn_down.weight", [f, e], 0, 4)]
    head[8:24] = struct.pack("<QQ", len(tensors), len(kvs) + len(raw))
    head += b"".join(raw)
    offset = 0
    for name, dims, gtype, size in tensors:
        head += struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", len(dims))
        head += b"".join(struct.pack("<q", d) for d in dims) + struct.pack("<IQ", gtype, offset)
        n = size
        for d in dims:
            n *= d
        offset += (n + 31) // 32 * 32
    head += b"\0" * ((-len(head)) % 32)
    with open(out, "wb") as fh:
        fh.write(head)
        fh.truncate(len(head) + offset)
    return model


def test_real_vocabularies_of_the_pinned_llama_cpp_pass_the_vocab_rules(tmp_path):
    """No false positives from the tokenizer rules: every vocabulary llama.cpp ships for a
    supported tokenizer (gpt2 BPE: qwen2, llama-bpe, gpt-2, falcon, ...; llama SPM: llama-spm,
    phi-3, baichuan) passes (merges, special ids, token types, UTF-8, byte tokens)."""
    from finllm_edge.native.fetch import llama_src_dir

    vocabs = sorted((llama_src_dir(progress=False) / "models").glob("ggml-vocab-*.gguf"))
    checked = {}
    for v in vocabs:
        out = tmp_path / v.name
        model = _graft_vocab(v, out)
        if model in ("gpt2", "llama"):
            validate_gguf(out)
            checked[v.name] = model
        else:
            with pytest.raises(GGUFValidationError, match="tokenizer is not supported"):
                validate_gguf(out)
        out.unlink()
    assert {"ggml-vocab-qwen2.gguf", "ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-bpe.gguf"} <= set(checked)
    assert len(checked) >= 12
