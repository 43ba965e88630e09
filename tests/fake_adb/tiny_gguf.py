"""A tiny llama GGUF for emulated device benchmarks (seconds under qemu instead of minutes).

It keeps SmolLM2-135M-Instruct's tokenizer (so prompts tokenize exactly as with the real
model) and replaces the network with 2 layers of width 64 and seeded random weights:
Q8_0 token embedding (tied output head), Q4_0 block matrices (what llama.cpp repacks for
dotprod at load), F32 norms. Its text is noise; its timings are not the point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_FF, CTX = 64, 2, 4, 2, 128, 512


def make_tiny_gguf(out: Path, source: Path, seed: int = 0) -> Path:
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(source))
    w = gguf.GGUFWriter(str(out), "llama")
    for name, field in reader.fields.items():
        if name.startswith(("GGUF.", "general.architecture", "llama.")) or name == "general.file_type":
            continue
        vtype = field.types[0]
        val = field.contents()
        if vtype == GGUFValueType.ARRAY:
            w.add_key_value(name, val, vtype, sub_type=field.types[-1])
        else:
            w.add_key_value(name, val, vtype)
    head_dim = N_EMBD // N_HEAD
    w.add_block_count(N_LAYER)
    w.add_context_length(CTX)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    w.add_vocab_size(vocab)
    w.add_file_type(2)  # MOSTLY_Q4_0

    rng = np.random.default_rng(seed)

    def q(name: str, rows: int, cols: int, qtype) -> None:
        data = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
        packed = gguf.quants.quantize(data, qtype)
        w.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=qtype)

    q("token_embd.weight", vocab, N_EMBD, Q.Q8_0)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    kv = N_HEAD_KV * head_dim
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        q(f"blk.{i}.attn_q.weight", N_EMBD, N_EMBD, Q.Q4_0)
        q(f"blk.{i}.attn_k.weight", kv, N_EMBD, Q.Q4_0)
        q(f"blk.{i}.attn_v.weight", kv, N_EMBD, Q.Q4_0)
        q(f"blk.{i}.attn_output.weight", N_EMBD, N_EMBD, Q.Q4_0)
        q(f"blk.{i}.ffn_gate.weight", N_FF, N_EMBD, Q.Q4_0)
        q(f"blk.{i}.ffn_up.weight", N_FF, N_EMBD, Q.Q4_0)
        q(f"blk.{i}.ffn_down.weight", N_EMBD, N_FF, Q.Q4_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
