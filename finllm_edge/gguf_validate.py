"""Pre-flight validation of GGUF model files: headers only, never tensor data.

A model file downloaded by an app is untrusted input. llama.cpp's GGUF loader has had
heap overflows from counts, lengths and offsets that do not fit the file, so every file
is checked here (and by the C twin, native/src/gguf_validate.c) before llama.cpp opens it.
Both implementations apply the same rules, in the same order, and name the failing field
the same way, so their verdicts can be compared byte for byte (tests/test_gguf_validate.py).

Field names in errors: ``magic``, ``version``, ``tensor_count``, ``kv_count``,
``kv[i].key``, the key itself for anything about a key's value (``general.alignment``),
the missing key for a missing required key (``llama.block_count``), ``tensor[i].name``,
``tensor[i].n_dims``, ``tensor[i].ne``, ``tensor[i].type`` and ``tensor[i].offset``.

Usage::

    from finllm_edge.gguf_validate import validate_file
    info = validate_file("model.gguf")   # raises GGUFValidationError (a CorruptModelError)
"""
from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from finllm_edge.errors import CorruptModelError, ModelNotFoundError

# Caps. A real model is far below each; the same numbers are in native/src/gguf_validate.h.
MAX_TENSORS = 65536
MAX_KV = 16384
MAX_KEY_LEN = 256
MAX_STRING_LEN = 64 * 1024 * 1024
MAX_ARRAY_LEN = 1 << 24
MAX_TENSOR_NAME = 63          # llama.cpp: GGML_MAX_NAME (64) including the NUL
MAX_DIMS = 4
MAX_TOKENS = 1 << 20
MAX_TOKEN_LEN = 4096
MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-byte key, type, 1-byte value
MIN_TENSOR_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, name, n_dims, one dim, type, offset
INT64_MAX = (1 << 63) - 1
DEFAULT_ALIGNMENT = 32

# GGUF value types: id -> (name, size in bytes; 0 for string/array).
T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)
VALUE_TYPES = {T_U8: ("u8", 1), T_I8: ("i8", 1), T_U16: ("u16", 2), T_I16: ("i16", 2),
               T_U32: ("u32", 4), T_I32: ("i32", 4), T_F32: ("f32", 4), T_BOOL: ("bool", 1),
               T_STR: ("str", 0), T_ARR: ("arr", 0), T_U64: ("u64", 8), T_I64: ("i64", 8),
               T_F64: ("f64", 8)}
INT_TYPES = {T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i",
             T_U64: "<Q", T_I64: "<q"}

# ggml tensor types: id -> (name, block size in elements, block size in bytes).
# From the pinned llama.cpp (ggml/src/ggml.c type_traits); removed ids are absent.
GGML_TYPES = {
    0: ("f32", 1, 4), 1: ("f16", 1, 2), 2: ("q4_0", 32, 18), 3: ("q4_1", 32, 20),
    6: ("q5_0", 32, 22), 7: ("q5_1", 32, 24), 8: ("q8_0", 32, 34), 9: ("q8_1", 32, 36),
    10: ("q2_K", 256, 84), 11: ("q3_K", 256, 110), 12: ("q4_K", 256, 144),
    13: ("q5_K", 256, 176), 14: ("q6_K", 256, 210), 15: ("q8_K", 256, 292),
    16: ("iq2_xxs", 256, 66), 17: ("iq2_xs", 256, 74), 18: ("iq3_xxs", 256, 98),
    19: ("iq1_s", 256, 50), 20: ("iq4_nl", 32, 18), 21: ("iq3_s", 256, 110),
    22: ("iq2_s", 256, 82), 23: ("iq4_xs", 256, 136), 24: ("i8", 1, 1), 25: ("i16", 1, 2),
    26: ("i32", 1, 4), 27: ("i64", 1, 8), 28: ("f64", 1, 8), 29: ("iq1_m", 256, 56),
    30: ("bf16", 1, 2), 34: ("tq1_0", 256, 54), 35: ("tq2_0", 256, 66),
    39: ("mxfp4", 32, 17), 40: ("nvfp4", 64, 36), 41: ("q1_0", 128, 18), 42: ("q2_0", 64, 18),
}

# Keys every supported architecture must carry (u32, 1..cap). Register new ones here
# and in ARCH_TABLE of gguf_validate.c.
ARCH_KEYS = (("block_count", 512), ("context_length", 1 << 24),
             ("embedding_length", 1 << 20), ("attention.head_count", 1 << 16))
# Tokenizers those architectures use; others (rwkv, ...) hit asserts in llama.cpp's vocab.
SUPPORTED_TOKENIZERS = ("llama", "gpt2")
SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "mistral", "phi3", "gemma", "gemma2", "gemma3")


class GGUFValidationError(CorruptModelError):
    """The file is not a GGUF model llama.cpp can load safely.

    ``field`` names the GGUF field, ``offset`` is its byte offset in the file.
    """

    def __init__(self, field: str, offset: int, reason: str, path: str | None = None):
        self.field, self.offset, self.reason, self.path = field, offset, reason, path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}invalid GGUF field '{field}' at byte {offset}: {reason}. "
                         "The model file is corrupt or hostile; download or convert it again.")


@dataclass(frozen=True)
class GGUFInfo:
    """What validation learned about an accepted file."""
    version: int
    architecture: str
    n_kv: int
    n_tensors: int
    alignment: int
    data_offset: int
    data_size: int


@dataclass
class _KV:
    index: int
    key_offset: int
    type: int
    elem_type: int       # array element type, or -1
    count: int           # array length, 1 for scalars
    value_offset: int    # offset of the value (after type / element type / count)
    scalar: int | None   # integer scalars
    text: bytes | None   # string scalars of at most 64 bytes


class _Reader:
    """Sequential, bounds-checked reads over a file, buffered in chunks."""

    CHUNK = 1 << 20

    def __init__(self, f, size: int):
        self.f, self.size, self.pos = f, size, 0
        self.buf, self.buf_start = b"", 0

    def left(self) -> int:
        return self.size - self.pos

    def _fill(self, n: int) -> bool:
        rel = self.pos - self.buf_start
        if rel + n <= len(self.buf):
            return True
        self.f.seek(self.pos)
        self.buf = self.f.read(max(n, self.CHUNK))
        self.buf_start = self.pos
        return len(self.buf) >= n

    def take(self, n: int, field: str) -> bytes:
        if n > self.left() or not self._fill(n):
            raise GGUFValidationError(field, self.pos, "unexpected end of file")
        rel = self.pos - self.buf_start
        self.pos += n
        return self.buf[rel:rel + n]

    def unpack(self, fmt: str, n: int, field: str) -> int:
        return struct.unpack(fmt, self.take(n, field))[0]

    def u32(self, field: str) -> int:
        return self.unpack("<I", 4, field)

    def u64(self, field: str) -> int:
        return self.unpack("<Q", 8, field)

    def skip(self, n: int, field: str) -> None:
        if n > self.left():
            raise GGUFValidationError(field, self.pos, "unexpected end of file")
        self.pos += n


def _fail(field: str, offset: int, reason: str):
    raise GGUFValidationError(field, offset, reason)


def _read_header(r: _Reader) -> tuple[int, int, int]:
    magic = r.take(4, "magic")
    if magic != b"GGUF":
        _fail("magic", 0, f"expected b'GGUF', found {magic!r}")
    version = r.u32("version")
    if version not in (2, 3):
        hint = " (byte-swapped: a big-endian file?)" if version & 0xFFFF == 0 else ""
        _fail("version", 4, f"version {version} is not supported (2 or 3){hint}")
    n_tensors = r.u64("tensor_count")
    if n_tensors == 0 or n_tensors > MAX_TENSORS:
        _fail("tensor_count", 8, f"{n_tensors} tensors; a model has 1..{MAX_TENSORS}")
    if n_tensors * MIN_TENSOR_BYTES > r.left():
        _fail("tensor_count", 8, f"{n_tensors} tensors cannot fit in the {r.size}-byte file")
    n_kv = r.u64("kv_count")
    if n_kv > MAX_KV:
        _fail("kv_count", 16, f"{n_kv} key-value pairs; at most {MAX_KV}")
    if n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_BYTES > r.left():
        _fail("kv_count", 16, f"{n_kv} key-value pairs cannot fit in the {r.size}-byte file")
    return version, n_tensors, n_kv


def _read_string_len(r: _Reader, field: str, what: str, cap: int) -> int:
    at = r.pos
    n = r.u64(field)
    if n > cap:
        _fail(field, at, f"{what} length {n} exceeds the cap {cap}")
    if n > r.left():
        _fail(field, at, f"{what} length {n} runs past the end of the file")
    return n


def _read_tokens(r: _Reader, key: str, count: int) -> None:
    """llama.cpp aborts (GGML_ASSERT) on a vocabulary with two equal tokens. It reads each
    token as a C string (up to the first NUL) and renames an empty token i "[EMPTY_i]";
    tokens must be unique under those rules."""
    seen: dict[bytes, int] = {}
    for j in range(count):
        at = r.pos
        n = _read_string_len(r, key, f"element {j}: token", MAX_TOKEN_LEN)
        tok = r.take(n, key).split(b"\0", 1)[0]  # llama.cpp reads tokens as C strings
        tok = tok or b"[EMPTY_%d]" % j
        if tok in seen:
            _fail(key, at, f"token {j} repeats token {seen[tok]}; llama.cpp aborts on that")
        seen[tok] = j


def _read_kv(r: _Reader, i: int, seen: dict) -> _KV:
    kfield = f"kv[{i}].key"
    key_offset = r.pos
    n = _read_string_len(r, kfield, "key", MAX_KEY_LEN)
    if n == 0:
        _fail(kfield, key_offset, "empty key")
    raw = r.take(n, kfield)
    if any(c < 0x20 or c > 0x7E for c in raw):
        _fail(kfield, key_offset, "key is not printable ASCII")
    key = raw.decode("ascii")
    if key in seen:
        _fail(kfield, key_offset, f"duplicate key '{key}' (first at kv[{seen[key].index}])")
    at = r.pos
    vtype = r.u32(key)
    if vtype not in VALUE_TYPES:
        _fail(key, at, f"unknown value type {vtype}")
    elem, count, scalar, text = -1, 1, None, None
    if vtype == T_ARR:
        at = r.pos
        elem = r.u32(key)
        if elem not in VALUE_TYPES:
            _fail(key, at, f"unknown array element type {elem}")
        if elem == T_ARR:
            _fail(key, at, "arrays of arrays are not supported")
        at = r.pos
        count = r.u64(key)
        if count > MAX_ARRAY_LEN:
            _fail(key, at, f"array length {count} exceeds the cap {MAX_ARRAY_LEN}")
        min_size = 8 if elem == T_STR else VALUE_TYPES[elem][1]
        if count * min_size > r.left():
            _fail(key, at, f"array of {count} {VALUE_TYPES[elem][0]} runs past the end of the file")
    if vtype == T_ARR and elem == T_STR and key == "tokenizer.ggml.tokens" and count > MAX_TOKENS:
        _fail(key, at, f"{count} tokens exceed the cap {MAX_TOKENS}")
    value_offset = r.pos
    if vtype == T_ARR and elem == T_STR and key == "tokenizer.ggml.tokens":
        _read_tokens(r, key, count)
    elif vtype == T_ARR and elem == T_STR:
        for j in range(count):
            n = _read_string_len(r, key, f"element {j}: string", MAX_STRING_LEN)
            r.skip(n, key)
    elif vtype == T_ARR:
        r.skip(count * VALUE_TYPES[elem][1], key)
    elif vtype == T_STR:
        n = _read_string_len(r, key, "string", MAX_STRING_LEN)
        if n <= 64:
            text = r.take(n, key)
        else:
            r.skip(n, key)
    elif vtype in INT_TYPES:
        scalar = r.unpack(INT_TYPES[vtype], VALUE_TYPES[vtype][1], key)
    else:
        r.skip(VALUE_TYPES[vtype][1], key)
    kv = _KV(i, key_offset, vtype, elem, count, value_offset, scalar, text)
    seen[key] = kv
    return kv


def _type_name(kv: _KV) -> str:
    if kv.type == T_ARR:
        return f"arr[{VALUE_TYPES[kv.elem_type][0]}]"
    return VALUE_TYPES[kv.type][0]


def _check_kvs(kvs: dict, kv_count_offset: int) -> tuple[str, int]:
    """Rules on the key-value section as a whole; returns (architecture, alignment)."""
    def need(key: str) -> _KV:
        if key not in kvs:
            _fail(key, kv_count_offset, "required key is missing")
        return kvs[key]

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in kvs:
        kv = kvs["general.alignment"]
        if kv.type != T_U32:
            _fail("general.alignment", kv.value_offset, f"must be u32, is {_type_name(kv)}")
        alignment = kv.scalar
        if alignment == 0 or alignment & (alignment - 1):
            _fail("general.alignment", kv.value_offset, f"{alignment} is not a power of two")
    kv = need("general.architecture")
    if kv.type != T_STR:
        _fail("general.architecture", kv.value_offset, f"must be str, is {_type_name(kv)}")
    arch = (kv.text or b"").decode("ascii", "replace")
    if arch not in SUPPORTED_ARCHS:
        _fail("general.architecture", kv.value_offset,
              f"architecture '{arch[:64]}' is not supported ({', '.join(SUPPORTED_ARCHS)})")
    for suffix, cap in ARCH_KEYS:
        key = f"{arch}.{suffix}"
        kv = need(key)
        if kv.type != T_U32:
            _fail(key, kv.value_offset, f"must be u32, is {_type_name(kv)}")
        if not 1 <= kv.scalar <= cap:
            _fail(key, kv.value_offset, f"value {kv.scalar} is outside 1..{cap}")
    kv = need("tokenizer.ggml.model")
    if kv.type != T_STR:
        _fail("tokenizer.ggml.model", kv.value_offset, f"must be str, is {_type_name(kv)}")
    model = (kv.text or b"").decode("ascii", "replace")
    if model not in SUPPORTED_TOKENIZERS:
        _fail("tokenizer.ggml.model", kv.value_offset,
              f"tokenizer '{model[:64]}' is not supported ({', '.join(SUPPORTED_TOKENIZERS)})")
    tokens = need("tokenizer.ggml.tokens")
    if tokens.type != T_ARR or tokens.elem_type != T_STR:
        _fail("tokenizer.ggml.tokens", tokens.value_offset, f"must be arr[str], is {_type_name(tokens)}")
    if not 1 <= tokens.count <= MAX_TOKENS:
        _fail("tokenizer.ggml.tokens", tokens.value_offset, f"{tokens.count} tokens; need 1..{MAX_TOKENS}")
    for key, allowed in (("tokenizer.ggml.scores", (T_F32, T_I32)),
                         ("tokenizer.ggml.token_type", (T_I32,))):
        kv = kvs.get(key)
        if kv is None:
            continue
        if kv.type != T_ARR or kv.elem_type not in allowed:
            _fail(key, kv.value_offset, f"wrong type {_type_name(kv)}")
        if kv.count < tokens.count:
            _fail(key, kv.value_offset, f"{kv.count} entries for {tokens.count} tokens")
    kv = kvs.get("tokenizer.ggml.merges")
    if kv is not None and (kv.type != T_ARR or kv.elem_type != T_STR):
        _fail("tokenizer.ggml.merges", kv.value_offset, f"must be arr[str], is {_type_name(kv)}")
    return arch, alignment


def _read_tensor(r: _Reader, i: int, names: dict, alignment: int, expected: int) -> tuple[int, int, int]:
    """Reads tensor info i; returns (offset-field position, byte size, padded end)."""
    field = f"tensor[{i}].name"
    at = r.pos
    n = _read_string_len(r, field, "name", MAX_TENSOR_NAME)
    if n == 0:
        _fail(field, at, "empty tensor name")
    name = r.take(n, field)
    if b"\0" in name:
        _fail(field, at, "tensor name contains a NUL byte")
    if name in names:
        _fail(field, at, f"duplicate tensor name {name!r} (first at tensor[{names[name]}])")
    names[name] = i
    field, at = f"tensor[{i}].n_dims", r.pos
    n_dims = r.u32(field)
    if not 1 <= n_dims <= MAX_DIMS:
        _fail(field, at, f"{n_dims} dimensions; need 1..{MAX_DIMS}")
    field, at = f"tensor[{i}].ne", r.pos
    ne = [r.unpack("<q", 8, field) for _ in range(n_dims)]
    if any(d <= 0 for d in ne):
        _fail(field, at, f"dimensions {ne} must all be positive")
    total = 1
    for d in ne:
        total *= d
        if total > INT64_MAX:
            _fail(field, at, f"dimensions {ne} overflow int64")
    field, tat = f"tensor[{i}].type", r.pos
    gtype = r.u32(field)
    if gtype not in GGML_TYPES:
        _fail(field, tat, f"unknown ggml type {gtype}")
    tname, blck, tsize = GGML_TYPES[gtype]
    if ne[0] % blck:
        _fail(f"tensor[{i}].ne", at, f"ne[0]={ne[0]} is not a multiple of the {tname} block size {blck}")
    nbytes = total // blck * tsize
    if nbytes > INT64_MAX - alignment:
        _fail(f"tensor[{i}].ne", at, f"byte size of {ne} as {tname} overflows int64")
    if nbytes > r.size:
        _fail(f"tensor[{i}].ne", at, f"{nbytes} bytes of {tname} cannot fit in the {r.size}-byte file")
    field, at = f"tensor[{i}].offset", r.pos
    offset = r.u64(field)
    if offset % alignment:
        _fail(field, at, f"offset {offset} is not a multiple of the alignment {alignment}")
    if offset < expected:
        _fail(field, at, f"offset {offset} overlaps the previous tensor (ends at {expected})")
    if offset > expected:
        _fail(field, at, f"offset {offset} leaves a gap; llama.cpp needs {expected}")
    padded = -(-nbytes // alignment) * alignment
    if padded > INT64_MAX - expected:
        _fail(field, at, "data section size overflows int64")
    return at, nbytes, expected + padded


def validate_file(path: str | os.PathLike) -> GGUFInfo:
    """Validates the headers of a GGUF file; raises GGUFValidationError naming the bad field."""
    path = os.fspath(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block, a directory is no model
            raise CorruptModelError(f"{path}: not a regular file; pass the path of a .gguf file")
        f = open(path, "rb")
    except FileNotFoundError as e:
        raise ModelNotFoundError(f"{path}: model file not found") from e
    except OSError as e:
        raise CorruptModelError(f"{path}: cannot read the model file ({e})") from e
    with f:
        size = os.fstat(f.fileno()).st_size
        try:
            return _validate(_Reader(f, size))
        except GGUFValidationError as e:
            e.path = path
            e.args = (f"{path}: {e.args[0]}",)
            raise


def _validate(r: _Reader) -> GGUFInfo:
    version, n_tensors, n_kv = _read_header(r)
    kvs: dict[str, _KV] = {}
    for i in range(n_kv):
        _read_kv(r, i, kvs)
    arch, alignment = _check_kvs(kvs, 16)
    names: dict[bytes, int] = {}
    ends, expected = [], 0
    for i in range(n_tensors):
        at, nbytes, end = _read_tensor(r, i, names, alignment, expected)
        ends.append((at, expected + nbytes))
        expected = end
    data_offset = -(-r.pos // alignment) * alignment
    for i, (at, end) in enumerate(ends):
        if data_offset + end > r.size:
            _fail(f"tensor[{i}].offset", at,
                  f"tensor data ends at byte {data_offset + end}, past the end of the {r.size}-byte file")
    return GGUFInfo(version, arch, n_kv, n_tensors, alignment, data_offset, expected)
