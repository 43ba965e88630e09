"""Tiny random Llama GGUFs: the one writer for the lab's and the tests' synthetic models.

Two users: the latency model's graph calibration (graph_calibration.py: 30 layers of width 64,
F16, a byte + letter vocabulary, where the per-op cost of a real llama.cpp graph is measured) and
the emulated device benchmarks (tests/test_device_emulated.py: 2 layers, SmolLM2's tokenizer copied
so prompts tokenize as with the real model, Q8_0 embedding and Q4_0 matrices, what llama.cpp
repacks for dotprod). Weights are seeded random; the text such a model writes is noise.

    write_random_llama(path, Shape(n_layer=2), tokenizer=copy_tokenizer(smollm2_gguf),
                       matrices="Q4_0", embedding="Q8_0", weight_std=0.05)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

# GGUF general.file_type of the block-matrix formats offered
_FILE_TYPE = {"F16": 1, "Q4_0": 2}
_FORMATS = ("F16", "Q4_0", "Q8_0")


@dataclass(frozen=True)
class Shape:
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx: int = 2048


Tokenizer = Callable[[object], int]  # adds the tokenizer's keys to a GGUFWriter, returns n_vocab


def byte_letter_tokenizer(writer) -> int:
    """An SPM vocabulary of <unk>, <s>, </s>, the 256 byte tokens, and letters with and without the
    word-start mark: 312 tokens, every text encodable."""
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    normal = ["\u2581"] + letters + ["\u2581" + c for c in letters]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + normal
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(normal))])
    writer.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(normal))  # unknown, control x2, byte, normal
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    return len(tokens)


def copy_tokenizer(source: Path) -> Tokenizer:
    """The tokenizer (and chat template, general.* keys) of an existing GGUF."""

    def add(writer) -> int:
        from gguf import GGUFReader, GGUFValueType

        reader = GGUFReader(str(source))
        arch = str(reader.fields["general.architecture"].contents())
        for name, field in reader.fields.items():
            if name.startswith(("GGUF.", "general.architecture", f"{arch}.")) or name == "general.file_type":
                continue
            vtype = field.types[0]
            if vtype == GGUFValueType.ARRAY:
                writer.add_key_value(name, field.contents(), vtype, sub_type=field.types[-1])
            else:
                writer.add_key_value(name, field.contents(), vtype)
        return len(reader.fields["tokenizer.ggml.tokens"].data)

    return add


def write_random_llama(path: Path, shape: Shape, *, tokenizer: Tokenizer, matrices: str = "F16",
                       embedding: str = "F16", weight_std: float | None = None, seed: int = 0,
                       name: str | None = None) -> Path:
    """Write the GGUF atomically (a .part file renamed). Block matrices in `matrices` (F16 or Q4_0),
    the token embedding (tied output head) in `embedding` (F16 or Q8_0), norms F32 ones. Weights
    are N(0, weight_std), or N(0, 1/fan_in) when weight_std is None; one seeded stream, drawn in
    the same order for every shape."""
    import gguf

    if matrices not in _FILE_TYPE or embedding not in _FORMATS:
        raise ValueError(f"matrices {matrices!r} (F16, Q4_0) or embedding {embedding!r} (F16, Q8_0) not offered")
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".part")
    w = gguf.GGUFWriter(str(tmp), "llama")
    if name:
        w.add_name(name)
    n_vocab = tokenizer(w)
    hd = shape.n_embd // shape.n_head
    w.add_block_count(shape.n_layer)
    w.add_context_length(shape.n_ctx)
    w.add_embedding_length(shape.n_embd)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hd)
    w.add_vocab_size(n_vocab)
    w.add_file_type(_FILE_TYPE[matrices])

    def tensor(tname: str, n_out: int, n_in: int, fmt: str) -> None:
        std = weight_std if weight_std is not None else 1.0 / np.sqrt(n_in)
        data = rng.standard_normal((n_out, n_in)) * std
        if fmt == "F16":
            w.add_tensor(tname, data.astype(np.float16))
            return
        qtype = getattr(gguf.GGMLQuantizationType, fmt)
        packed = gguf.quants.quantize(data.astype(np.float32), qtype)
        w.add_tensor(tname, packed, raw_shape=packed.shape, raw_dtype=qtype)

    kv = shape.n_head_kv * hd
    tensor("token_embd.weight", n_vocab, shape.n_embd, embedding)
    w.add_tensor("output_norm.weight", np.ones(shape.n_embd, np.float32))
    for i in range(shape.n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(shape.n_embd, np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(shape.n_embd, np.float32))
        for tname, n_out, n_in in (("attn_q", shape.n_embd, shape.n_embd), ("attn_k", kv, shape.n_embd),
                                   ("attn_v", kv, shape.n_embd), ("attn_output", shape.n_embd, shape.n_embd),
                                   ("ffn_gate", shape.n_ff, shape.n_embd), ("ffn_up", shape.n_ff, shape.n_embd),
                                   ("ffn_down", shape.n_embd, shape.n_ff)):
            tensor(p + tname + ".weight", n_out, n_in, matrices)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.rename(path)
    return path
