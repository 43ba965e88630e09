"""Generates the bad-GGUF corpus: one file per defect class, plus truncations of valid files.

    python tests/gen_bad_gguf.py OUTDIR [--smollm2 PATH]

writes OUTDIR/<name>.gguf for each case and OUTDIR/manifest.json ({name: expected field}).
Importable: ``write_corpus(outdir, smollm2=None) -> {name: field}``.

Files come from a small GGUF serializer written from the format spec (``build``), so a
defect can lie about any one count, length, type or offset while everything else stays
right. The valid base (``tiny_llama_spec``) is a 1-layer llama model with a gpt2 vocabulary;
tests check it is byte-identical to what the gguf package writes for the same content.
"""
from __future__ import annotations

import json
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
       U64: "<Q", I64: "<q", F64: "<d"}
# ggml types used here: id -> (block elements, block bytes), as in ggml.c.
F32_T, F16_T, Q8_0_T = 0, 1, 8
BLOCKS = {0: (1, 4), 1: (1, 2), 8: (32, 34), 28: (1, 8)}


@dataclass
class KV:
    key: str | bytes
    vtype: int
    value: object = None
    elem: int | None = None        # element type of an array
    key_len: int | None = None     # lie about the key length
    count: int | None = None       # lie about the array length
    raw: bytes | None = None       # replaces the encoded value (after the type/array header)


@dataclass
class Tensor:
    name: str | bytes
    dims: list[int]                # ggml order: ne[0] first
    gtype: int
    offset: int | None = None      # None: the offset a correct writer would put
    n_dims: int | None = None      # lie about the dimension count
    name_len: int | None = None    # lie about the name length


@dataclass
class Spec:
    kvs: list[KV]
    tensors: list[Tensor]
    magic: bytes = b"GGUF"
    version: int = 3
    n_tensors: int | None = None
    n_kv: int | None = None
    alignment: int = 32            # layout alignment (general.alignment is a KV like any other)
    cut: int | None = None         # keep only this many bytes


@dataclass
class Built:
    data: bytes
    records: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, field)


def _nbytes(t: Tensor) -> int:
    """Data bytes written for t: its true size, or 0 when that is absurd (a defect)."""
    if t.gtype not in BLOCKS:
        return 0
    blck, size = BLOCKS[t.gtype]
    n = 1
    for d in t.dims:
        n *= d
    n = n // blck * size
    return n if 0 <= n <= 1 << 20 else 0


def _pad(n: int, a: int) -> int:
    return (n + a - 1) // a * a


class _Out:
    def __init__(self):
        self.buf = bytearray()
        self.records: list[tuple[int, int, str]] = []

    def put(self, b: bytes, fld: str):
        self.records.append((len(self.buf), len(self.buf) + len(b), fld))
        self.buf += b

    def pack(self, fmt: str, v, fld: str):
        self.put(struct.pack(fmt, v), fld)

    def string(self, s: bytes, fld: str, n: int | None = None):
        self.pack("<Q", len(s) if n is None else n, fld)
        self.put(s, fld)


def _b(s: str | bytes) -> bytes:
    return s if isinstance(s, bytes) else s.encode()


def _value(o: _Out, vtype: int, v, fld: str):
    if vtype == STR:
        o.string(_b(v), fld)
    elif vtype not in FMT:  # a type the format does not have: some filler bytes
        o.put(b"\0" * 8, fld)
    else:
        o.pack(FMT[vtype], v, fld)


def build(spec: Spec) -> Built:
    o = _Out()
    o.put(spec.magic, "magic")
    o.pack("<I", spec.version, "version")
    o.pack("<Q", len(spec.tensors) if spec.n_tensors is None else spec.n_tensors, "tensor_count")
    o.pack("<Q", len(spec.kvs) if spec.n_kv is None else spec.n_kv, "kv_count")
    for i, kv in enumerate(spec.kvs):
        key = _b(kv.key)
        o.string(key, f"kv[{i}].key", kv.key_len)
        fld = key.decode("ascii", "replace")
        o.pack("<I", kv.vtype, fld)
        if kv.vtype == ARR:
            o.pack("<I", kv.elem, fld)
            o.pack("<Q", len(kv.value) if kv.count is None else kv.count, fld)
        if kv.raw is not None:
            o.put(kv.raw, fld)
        elif kv.vtype == ARR:
            for v in kv.value:
                _value(o, kv.elem, v, fld)
        else:
            _value(o, kv.vtype, kv.value, fld)
    offset, data = 0, []
    for i, t in enumerate(spec.tensors):
        o.string(_b(t.name), f"tensor[{i}].name", t.name_len)
        o.pack("<I", len(t.dims) if t.n_dims is None else t.n_dims, f"tensor[{i}].n_dims")
        for d in t.dims:
            o.pack("<q", d, f"tensor[{i}].ne")
        o.pack("<I", t.gtype, f"tensor[{i}].type")
        o.pack("<Q", offset if t.offset is None else t.offset, f"tensor[{i}].offset")
        data.append((offset, i, t))
        offset += _pad(_nbytes(t), spec.alignment)
    o.put(b"\0" * (_pad(len(o.buf), spec.alignment) - len(o.buf)), "(padding)")
    start = len(o.buf)
    for _off, i, t in data:
        n = _nbytes(t)
        o.put(bytes((j * 7 + i) & 0xFF for j in range(n)), f"tensor[{i}].offset")
        o.put(b"\0" * (_pad(n, spec.alignment) - n), "(padding)")
    assert len(o.buf) == start + offset
    out = bytes(o.buf if spec.cut is None else o.buf[:spec.cut])
    return Built(out, o.records)


# -- the valid base ---------------------------------------------------------------------

N_EMBD, N_FF, N_VOCAB = 32, 64, 8
TOKENS = ["<s>", "</s>", "a", "b", "c", "ab", "bc", "abc"]


def tiny_llama_spec() -> Spec:
    kvs = [
        KV("general.architecture", STR, "llama"),
        KV("general.name", STR, "finllm-edge tiny test model"),
        KV("llama.block_count", U32, 1),
        KV("llama.context_length", U32, 64),
        KV("llama.embedding_length", U32, N_EMBD),
        KV("llama.feed_forward_length", U32, N_FF),
        KV("llama.attention.head_count", U32, 2),
        KV("llama.attention.head_count_kv", U32, 2),
        KV("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        KV("general.file_type", U32, 7),
        KV("tokenizer.ggml.model", STR, "gpt2"),
        KV("tokenizer.ggml.pre", STR, "default"),
        KV("tokenizer.ggml.tokens", ARR, TOKENS, elem=STR),
        KV("tokenizer.ggml.token_type", ARR, [3, 3, 1, 1, 1, 1, 1, 1], elem=I32),
        KV("tokenizer.ggml.merges", ARR, ["a b", "b c", "ab c"], elem=STR),
        KV("tokenizer.ggml.bos_token_id", U32, 0),
        KV("tokenizer.ggml.eos_token_id", U32, 1),
        KV("general.quantization_version", U32, 2),
    ]
    e, f = N_EMBD, N_FF
    tensors = [Tensor("token_embd.weight", [e, N_VOCAB], F16_T),
               Tensor("output_norm.weight", [e], F32_T),
               Tensor("output.weight", [e, N_VOCAB], F16_T),
               Tensor("blk.0.attn_norm.weight", [e], F32_T)]
    tensors += [Tensor(f"blk.0.attn_{n}.weight", [e, e], Q8_0_T) for n in ("q", "k", "v", "output")]
    tensors += [Tensor("blk.0.ffn_norm.weight", [e], F32_T),
                Tensor("blk.0.ffn_gate.weight", [e, f], Q8_0_T),
                Tensor("blk.0.ffn_up.weight", [e, f], Q8_0_T),
                Tensor("blk.0.ffn_down.weight", [f, e], Q8_0_T)]
    return Spec(kvs, tensors)


def write_tiny_with_gguf_package(path: Path) -> None:
    """The same model as tiny_llama_spec(), written by the gguf package (reference writer)."""
    import gguf
    import numpy as np

    spec = tiny_llama_spec()
    w = gguf.GGUFWriter(str(path), arch="llama")
    adders = {STR: w.add_string, U32: w.add_uint32, F32: w.add_float32}
    for kv in spec.kvs[1:]:
        if kv.vtype == ARR:
            w.add_array(kv.key, kv.value)
        else:
            adders[kv.vtype](kv.key, kv.value)
    for i, t in enumerate(spec.tensors):
        n = _nbytes(t)
        raw = np.frombuffer(bytes((j * 7 + i) & 0xFF for j in range(n)), dtype=np.uint8)
        shape = list(reversed(t.dims))
        if t.gtype == Q8_0_T:
            w.add_tensor(t.name, raw.reshape(shape[:-1] + [n // shape[0] if len(shape) > 1 else n]),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            dt = np.float16 if t.gtype == F16_T else np.float32
            w.add_tensor(t.name, raw.view(dt).reshape(shape))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# -- defect classes ---------------------------------------------------------------------

DEFECTS: dict[str, tuple[object, str]] = {}


def defect(name: str, fld: str):
    def reg(fn):
        DEFECTS[name] = (fn, fld)
        return fn
    return reg


def _kv(s: Spec, key: str) -> KV:
    return next(kv for kv in s.kvs if kv.key == key)


def _kvi(s: Spec, key: str) -> int:
    return next(i for i, kv in enumerate(s.kvs) if kv.key == key)


def _drop(s: Spec, key: str):
    s.kvs.pop(_kvi(s, key))


def _set(s: Spec, key: str, **kw):
    kv = _kv(s, key)
    for k, v in kw.items():
        setattr(kv, k, v)


LAST = len(tiny_llama_spec().tensors) - 1
NAME_KV = 1  # index of general.name
# header
defect("bad_magic", "magic")(lambda s: setattr(s, "magic", b"GGML"))
defect("version_1", "version")(lambda s: setattr(s, "version", 1))
defect("version_4", "version")(lambda s: setattr(s, "version", 4))
defect("version_big_endian", "version")(lambda s: setattr(s, "version", 3 << 24))
defect("tensor_count_zero", "tensor_count")(lambda s: setattr(s, "n_tensors", 0))
defect("tensor_count_huge", "tensor_count")(lambda s: setattr(s, "n_tensors", 1 << 62))
defect("tensor_count_past_eof", "tensor_count")(lambda s: setattr(s, "n_tensors", 60000))
defect("kv_count_huge", "kv_count")(lambda s: setattr(s, "n_kv", (1 << 64) - 1))
defect("kv_count_past_eof", "kv_count")(lambda s: setattr(s, "n_kv", 10000))
# the first tensor info is then read as a key-value pair, and the tensor section slides
defect("kv_count_one_too_many", "tensor[0].name")(lambda s: setattr(s, "n_kv", len(s.kvs) + 1))
# keys
defect("key_empty", f"kv[{NAME_KV}].key")(lambda s: setattr(s.kvs[NAME_KV], "key", ""))
defect("key_too_long", f"kv[{NAME_KV}].key")(lambda s: setattr(s.kvs[NAME_KV], "key", "k" * 300))
defect("key_length_huge", f"kv[{NAME_KV}].key")(lambda s: setattr(s.kvs[NAME_KV], "key_len", 1 << 63))
defect("key_length_past_eof", f"kv[{NAME_KV}].key")(lambda s: setattr(s.kvs[NAME_KV], "key_len", 200))
defect("key_not_ascii", f"kv[{NAME_KV}].key")(lambda s: setattr(s.kvs[NAME_KV], "key", b"general.\xffname"))
defect("key_with_nul", f"kv[{NAME_KV}].key")(lambda s: setattr(s.kvs[NAME_KV], "key", b"general.name\0x"))
defect("duplicate_key", "kv[2].key")(lambda s: s.kvs.insert(2, KV("general.name", STR, "again")))
# values
defect("string_length_huge", "general.name")(
    lambda s: _set(s, "general.name", raw=struct.pack("<Q", 1 << 62)))
defect("string_length_past_eof", "general.name")(
    lambda s: _set(s, "general.name", raw=struct.pack("<Q", 60 << 20)))
defect("unknown_value_type", "general.name")(lambda s: _set(s, "general.name", vtype=13))
defect("value_type_huge", "general.name")(lambda s: _set(s, "general.name", vtype=0xFFFFFFFF))
defect("unknown_array_type", "tokenizer.ggml.merges")(lambda s: _set(s, "tokenizer.ggml.merges", elem=99))
defect("nested_array", "tokenizer.ggml.merges")(lambda s: _set(s, "tokenizer.ggml.merges", elem=ARR))
defect("array_length_huge", "tokenizer.ggml.tokens")(
    lambda s: _set(s, "tokenizer.ggml.tokens", count=(1 << 61) + 1))
defect("array_length_past_eof", "tokenizer.ggml.tokens")(
    lambda s: _set(s, "tokenizer.ggml.tokens", count=1_000_000))
defect("array_string_past_eof", "tokenizer.ggml.tokens")(
    lambda s: _set(s, "tokenizer.ggml.tokens", raw=struct.pack("<Q", 50 << 20)))
defect("numeric_array_past_eof", "tokenizer.ggml.token_type")(
    lambda s: _set(s, "tokenizer.ggml.token_type", count=100_000))
# semantics of the key-value section
defect("alignment_zero", "general.alignment")(lambda s: s.kvs.append(KV("general.alignment", U32, 0)))
defect("alignment_three", "general.alignment")(lambda s: s.kvs.append(KV("general.alignment", U32, 3)))
defect("alignment_wrong_type", "general.alignment")(lambda s: s.kvs.append(KV("general.alignment", U64, 32)))
defect("architecture_missing", "general.architecture")(lambda s: _drop(s, "general.architecture"))
defect("architecture_not_string", "general.architecture")(
    lambda s: _set(s, "general.architecture", vtype=U32, value=7))
defect("architecture_unsupported", "general.architecture")(
    lambda s: _set(s, "general.architecture", value="evil"))
for _suffix in ("block_count", "context_length", "embedding_length", "attention.head_count"):
    defect(f"missing_llama.{_suffix}", f"llama.{_suffix}")(lambda s, k=f"llama.{_suffix}": _drop(s, k))
defect("block_count_zero", "llama.block_count")(lambda s: _set(s, "llama.block_count", value=0))
defect("block_count_huge", "llama.block_count")(lambda s: _set(s, "llama.block_count", value=100_000))
defect("block_count_wrong_type", "llama.block_count")(lambda s: _set(s, "llama.block_count", vtype=I32))
defect("head_count_huge", "llama.attention.head_count")(
    lambda s: _set(s, "llama.attention.head_count", value=1 << 30))
defect("tokenizer_model_missing", "tokenizer.ggml.model")(lambda s: _drop(s, "tokenizer.ggml.model"))
defect("tokens_missing", "tokenizer.ggml.tokens")(lambda s: _drop(s, "tokenizer.ggml.tokens"))
defect("tokens_array_of_ints", "tokenizer.ggml.tokens")(
    lambda s: _set(s, "tokenizer.ggml.tokens", elem=I32, value=list(range(N_VOCAB))))
defect("tokens_not_array", "tokenizer.ggml.tokens")(
    lambda s: _set(s, "tokenizer.ggml.tokens", vtype=STR, value="abc"))
defect("tokens_duplicate", "tokenizer.ggml.tokens")(
    lambda s: _set(s, "tokenizer.ggml.tokens", value=TOKENS[:-1] + ["a"]))
defect("tokens_empty_collides", "tokenizer.ggml.tokens")(  # llama.cpp renames an empty token i "[EMPTY_i]"
    lambda s: _set(s, "tokenizer.ggml.tokens", value=TOKENS[:2] + ["", "[EMPTY_2]"] + TOKENS[4:]))
defect("tokens_equal_up_to_nul", "tokenizer.ggml.tokens")(  # llama.cpp reads tokens as C strings
    lambda s: _set(s, "tokenizer.ggml.tokens", value=TOKENS[:-1] + [b"a\0zz"]))
defect("token_too_long", "tokenizer.ggml.tokens")(
    lambda s: _set(s, "tokenizer.ggml.tokens", value=TOKENS[:-1] + ["x" * 5000]))
defect("tokens_too_many", "tokenizer.ggml.tokens")(
    lambda s: _set(s, "tokenizer.ggml.tokens", count=(1 << 20) + 1, raw=b"\0" * 8 * ((1 << 20) + 1)))
defect("tokenizer_unsupported", "tokenizer.ggml.model")(lambda s: _set(s, "tokenizer.ggml.model", value="rwkv"))
defect("tokens_empty", "tokenizer.ggml.tokens")(lambda s: _set(s, "tokenizer.ggml.tokens", value=[]))
defect("token_type_short", "tokenizer.ggml.token_type")(
    lambda s: _set(s, "tokenizer.ggml.token_type", value=[1, 1]))
defect("token_type_strings", "tokenizer.ggml.token_type")(
    lambda s: _set(s, "tokenizer.ggml.token_type", elem=STR, value=["x"] * N_VOCAB))
defect("scores_strings", "tokenizer.ggml.scores")(
    lambda s: s.kvs.append(KV("tokenizer.ggml.scores", ARR, ["x"] * N_VOCAB, elem=STR)))
defect("merges_ints", "tokenizer.ggml.merges")(lambda s: _set(s, "tokenizer.ggml.merges", elem=U8, value=[1]))


# semantic values: each one aborts the pinned llama.cpp (GGML_ASSERT) or makes it run nonsense
# (native/src/ASSERTS.md lists the asserts); the validator refuses them first
def _add(key: str, vtype: int, value, elem: int | None = None):
    return lambda s: s.kvs.append(KV(key, vtype, value, elem=elem))



NAN, INF = float("nan"), float("inf")
SEMANTIC: dict[str, tuple[object, str]] = {
    "alignment_below_32": (lambda s: s.kvs.append(KV("general.alignment", U32, 16)), "general.alignment"),
    "expert_count_huge": (_add("llama.expert_count", U32, 2000), "llama.expert_count"),
    "expert_used_without_experts": (_add("llama.expert_used_count", U32, 2), "llama.expert_used_count"),
    "expert_used_above_count": (
        lambda s: (_add("llama.expert_count", U32, 2)(s), _add("llama.expert_used_count", U32, 4)(s)),
        "llama.expert_used_count",
    ),
    "expert_groups_without_experts": (_add("llama.expert_group_count", U32, 2), "llama.expert_group_count"),
    "expert_group_used_without_experts": (
        _add("llama.expert_group_used_count", U32, 1),
        "llama.expert_group_used_count",
    ),
    "nextn_above_block_count": (_add("llama.nextn_predict_layers", U32, 3), "llama.nextn_predict_layers"),
    "head_count_kv_array_zero": (
        lambda s: _set(s, "llama.attention.head_count_kv", vtype=ARR, elem=I32, value=[0]),
        "llama.attention.head_count_kv",
    ),
    "head_count_kv_array_length": (
        lambda s: _set(s, "llama.attention.head_count_kv", vtype=ARR, elem=U32, value=[2, 2]),
        "llama.attention.head_count_kv",
    ),
    "head_count_kv_not_divisor": (
        lambda s: _set(s, "llama.attention.head_count_kv", value=3),
        "llama.attention.head_count_kv",
    ),
    "rms_eps_nan": (
        lambda s: _set(s, "llama.attention.layer_norm_rms_epsilon", value=NAN),
        "llama.attention.layer_norm_rms_epsilon",
    ),
    "rms_eps_negative": (
        lambda s: _set(s, "llama.attention.layer_norm_rms_epsilon", value=-1e-5),
        "llama.attention.layer_norm_rms_epsilon",
    ),
    "rope_scaling_type_bogus": (_add("llama.rope.scaling.type", STR, "bogus"), "llama.rope.scaling.type"),
    "rope_freq_base_zero": (_add("llama.rope.freq_base", F32, 0.0), "llama.rope.freq_base"),
    "rope_freq_base_neg_inf": (_add("llama.rope.freq_base", F32, -INF), "llama.rope.freq_base"),
    "rope_freq_base_wrong_type": (_add("llama.rope.freq_base", U32, 10000), "llama.rope.freq_base"),
    "rope_scale_zero": (_add("llama.rope.scaling.factor", F32, 0.0), "llama.rope.scaling.factor"),
    "rope_scale_negative": (_add("llama.rope.scaling.factor", F32, -2.0), "llama.rope.scaling.factor"),
    "rope_dimension_odd": (_add("llama.rope.dimension_count", U32, 15), "llama.rope.dimension_count"),
    "value_length_differs": (_add("llama.attention.value_length", U32, 8), "llama.attention.value_length"),
    "arch_float_inf": (_add("llama.rope.scaling.yarn_beta_fast", F32, INF), "llama.rope.scaling.yarn_beta_fast"),
    "tokenizer_llama_over_bpe": (lambda s: _set(s, "tokenizer.ggml.model", value="llama"), "tokenizer.ggml.model"),
    "bos_out_of_range": (
        lambda s: _set(s, "tokenizer.ggml.bos_token_id", value=N_VOCAB),
        "tokenizer.ggml.bos_token_id",
    ),
    "eos_out_of_range": (
        lambda s: _set(s, "tokenizer.ggml.eos_token_id", value=1 << 31),
        "tokenizer.ggml.eos_token_id",
    ),
    "pad_out_of_range": (_add("tokenizer.ggml.padding_token_id", U32, 1000), "tokenizer.ggml.padding_token_id"),
    "scores_longer_than_tokens": (
        _add("tokenizer.ggml.scores", ARR, [0.0] * (N_VOCAB + 1), elem=F32),
        "tokenizer.ggml.scores",
    ),
    "scores_nan": (
        _add("tokenizer.ggml.scores", ARR, [0.0] * (N_VOCAB - 1) + [NAN], elem=F32),
        "tokenizer.ggml.scores",
    ),
    "token_type_longer_than_tokens": (
        lambda s: _set(s, "tokenizer.ggml.token_type", value=[3, 3] + [1] * (N_VOCAB - 1)),
        "tokenizer.ggml.token_type",
    ),
    "token_type_out_of_range": (
        lambda s: _set(s, "tokenizer.ggml.token_type", value=[3, 3, 1, 1, 1, 1, 1, 7]),
        "tokenizer.ggml.token_type",
    ),
    "token_type_negative": (
        lambda s: _set(s, "tokenizer.ggml.token_type", value=[3, 3, 1, 1, 1, 1, 1, -1]),
        "tokenizer.ggml.token_type",
    ),
    "token_types_all_control": (
        lambda s: _set(s, "tokenizer.ggml.token_type", value=[3] * N_VOCAB),
        "tokenizer.ggml.token_type",
    ),
    "token_types_all_user_defined": (
        lambda s: _set(s, "tokenizer.ggml.token_type", value=[4] * N_VOCAB),
        "tokenizer.ggml.token_type",
    ),
    "token_typed_byte_not_byte": (
        lambda s: _set(s, "tokenizer.ggml.token_type", value=[3, 3, 6, 1, 1, 1, 1, 1]),
        "tokenizer.ggml.token_type",
    ),
    "token_not_utf8": (
        lambda s: _set(s, "tokenizer.ggml.tokens", value=TOKENS[:-1] + [b"\xff\xfe"]),
        "tokenizer.ggml.tokens",
    ),
    "tokens_more_than_embedding_rows": (
        lambda s: (
            _set(s, "tokenizer.ggml.tokens", value=TOKENS + ["d"]),
            _set(s, "tokenizer.ggml.token_type", value=[3, 3] + [1] * (N_VOCAB - 1)),
        ),
        "tokenizer.ggml.tokens",
    ),
    "merges_garbage": (
        lambda s: _set(s, "tokenizer.ggml.merges", value=["a b", "garbage", "ab c"]),
        "tokenizer.ggml.merges",
    ),
    "merges_unknown_token": (
        lambda s: _set(s, "tokenizer.ggml.merges", value=["a b", "b zz", "ab c"]),
        "tokenizer.ggml.merges",
    ),
    "merges_unknown_result": (
        lambda s: _set(s, "tokenizer.ggml.merges", value=["a b", "c a"]),
        "tokenizer.ggml.merges",
    ),
    "merges_missing": (lambda s: _drop(s, "tokenizer.ggml.merges"), "tokenizer.ggml.merges"),
}
for _name, (_fn, _fld) in SEMANTIC.items():
    defect(_name, _fld)(_fn)


# tensors
def _t(i: int, **kw):
    def mutate(s: Spec):
        for k, v in kw.items():
            setattr(s.tensors[i], k, v)
    return mutate


defect("duplicate_tensor_name", "tensor[2].name")(_t(2, name="token_embd.weight"))
defect("tensor_name_empty", "tensor[1].name")(_t(1, name=""))
defect("tensor_name_too_long", "tensor[1].name")(_t(1, name="x" * 64))
defect("tensor_name_with_nul", "tensor[1].name")(_t(1, name=b"output_norm\0.weight"))
defect("tensor_name_length_huge", "tensor[1].name")(_t(1, name_len=1 << 63))
defect("n_dims_zero", "tensor[1].n_dims")(_t(1, n_dims=0))
defect("n_dims_five", "tensor[1].n_dims")(_t(1, n_dims=5))
defect("dim_zero", "tensor[0].ne")(_t(0, dims=[N_EMBD, 0]))
defect("dim_negative", "tensor[0].ne")(_t(0, dims=[N_EMBD, -8]))
defect("dims_overflow", "tensor[0].ne")(_t(0, dims=[1 << 32, 1 << 31, 1 << 2]))
defect("bytes_overflow", "tensor[1].ne")(_t(1, dims=[1 << 61], gtype=28))
defect("dims_larger_than_file", "tensor[1].ne")(_t(1, dims=[1 << 40]))
defect("not_multiple_of_block", f"tensor[{LAST}].ne")(_t(LAST, dims=[N_FF + 1, N_EMBD]))
defect("ggml_type_removed", "tensor[1].type")(_t(1, gtype=4))
defect("ggml_type_unknown", "tensor[1].type")(_t(1, gtype=43))
defect("ggml_type_huge", "tensor[1].type")(_t(1, gtype=0xFFFFFFFF))
defect("offset_misaligned", "tensor[1].offset")(_t(1, offset=512 + 1))
defect("offset_overlap", "tensor[1].offset")(_t(1, offset=0))
defect("offset_gap", "tensor[1].offset")(_t(1, offset=512 + 32))
defect("offset_huge", "tensor[1].offset")(_t(1, offset=1 << 63))
defect("data_past_eof", f"tensor[{LAST}].offset")(lambda s: setattr(s, "cut", len(build(s).data) - 64))
defect("data_missing", "tensor[1].offset")(lambda s: setattr(s, "cut", _data_start(s) + 600))


def _data_start(s: Spec) -> int:
    return max(start for start, _, f in build(s).records if f == "tensor[0].offset")  # its data


def defect_cases() -> dict[str, tuple[bytes, str]]:
    out = {}
    for name, (fn, fld) in DEFECTS.items():
        spec = tiny_llama_spec()
        fn(spec)
        out[name] = (build(spec).data, fld)
    return out


# -- truncations --------------------------------------------------------------------------

def truncation_field(records: list[tuple[int, int, str]], cut: int, n_tensors: int, n_kv: int,
                     sizes: list[tuple[int, int]] = ()) -> str:
    """The field a validator must name when a file is cut after `cut` bytes.

    sizes: (end of tensor i's type field, its data size); a validator that has read a
    tensor's type rejects it at once if its data is larger than the whole file.
    """
    if cut >= 16 and n_tensors * 33 > cut - 16:
        return "tensor_count"
    if cut >= 24 and n_kv * 14 + n_tensors * 33 > cut - 24:
        return "kv_count"
    for i, (type_end, nbytes) in enumerate(sizes):
        if type_end <= cut and nbytes > cut:
            return f"tensor[{i}].ne"
    for _start, end, fld in records:
        if end > cut and fld != "(padding)":
            return fld
    raise ValueError(f"cut {cut} leaves the file whole")


def truncation_cases() -> dict[str, tuple[bytes, str]]:
    """The tiny model cut at every field boundary (header, every KV part, every tensor-info
    part, the data section start and every tensor's data)."""
    spec = tiny_llama_spec()
    built = build(spec)
    type_ends = [e for _, e, f in built.records if f.endswith("].type")]
    sizes = list(zip(type_ends, [_nbytes(t) for t in spec.tensors]))
    cuts = sorted({start for start, _, fld in built.records if fld != "(padding)"} | {len(built.data) - 1})
    out = {}
    for cut in cuts:
        fld = truncation_field(built.records, cut, len(spec.tensors), len(spec.kvs), sizes)
        out[f"trunc_tiny_{cut:05d}"] = (built.data[:cut], fld)
    return out


def smollm2_truncations(path: str | Path) -> dict[str, tuple[int, str]]:
    """Cuts of a real model at its section boundaries: {name: (length, field)}."""
    import gguf

    r = gguf.GGUFReader(str(path))
    kv_fields = [f for k, f in r.fields.items() if not k.startswith("GGUF.")]
    records = [(0, 4, "magic"), (4, 8, "version"), (8, 16, "tensor_count"), (16, 24, "kv_count")]
    starts = [f.offset for f in kv_fields] + [t.field.offset for t in r.tensors]
    names = [f"kv[{i}].key" for i in range(len(kv_fields))] + [f"tensor[{i}].name" for i in range(len(r.tensors))]
    ends = starts[1:] + [r.tensors[0].data_offset]
    for i, f in enumerate(kv_fields):  # a KV's key, then its value (named after the key)
        key_end = f.offset + 8 + len(f.name.encode())
        records += [(f.offset, key_end, names[i]), (key_end, ends[i], f.name)]
    records += list(zip(starts, ends, names))[len(kv_fields):]
    # coarse: a whole tensor info counts as read once the next one starts
    sizes = [(end, int(t.n_bytes)) for end, t in zip(ends[len(kv_fields):], r.tensors)]
    records.append((r.tensors[0].data_offset, r.tensors[0].data_offset + int(r.tensors[0].n_bytes), "tensor[0].offset"))
    cuts = [0, 3, 4, 8, 16, 20, 24, 9000, 9500] + starts[:len(kv_fields) + 3] + starts[-2:] + [
        r.tensors[0].data_offset, r.tensors[0].data_offset + 1]
    out = {}
    for cut in sorted(set(cuts)):
        out[f"trunc_smollm2_{cut:07d}"] = (cut, truncation_field(records, cut, len(r.tensors), len(kv_fields), sizes))
    return out


def write_corpus(outdir: str | Path, smollm2: str | Path | None = None) -> dict[str, str]:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, (data, fld) in {**defect_cases(), **truncation_cases()}.items():
        (outdir / f"{name}.gguf").write_bytes(data)
        manifest[name] = fld
    if smollm2 is not None:
        with open(smollm2, "rb") as f:
            for name, (cut, fld) in smollm2_truncations(smollm2).items():
                f.seek(0)
                (outdir / f"{name}.gguf").write_bytes(f.read(cut))
                manifest[name] = fld
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def write_valid_tiny(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(build(tiny_llama_spec()).data)
    return path


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 2
    smollm2 = argv[argv.index("--smollm2") + 1] if "--smollm2" in argv else None
    manifest = write_corpus(argv[0], smollm2)
    write_valid_tiny(Path(argv[0]) / "valid_tiny.gguf.ok")
    print(f"wrote {len(manifest)} bad files and manifest.json to {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
