"""ONNX int4 (onnxruntime-genai) vs GGUF Q4_0 vs GGUF Q4_K_M on SmolLM2, same threads, same run.

Prints a table and writes JSON: TTFT, prefill and decode tok/s (median over repetitions, via each
engine's benchmark(): OnnxEngine and finllm_edge.Engine, same finance prompt) and top-1 agreement
of each artifact with the fp32 HF reference on held-out text (teacher-forced, one window).

    python benchmarks/bench_onnx_vs_gguf.py --threads 2 --out out/bench_onnx_vs_gguf.json \
        [--hf HF_DIR] [--q4_0 FILE.gguf] [--q4_k_m FILE.gguf]

HF_DIR defaults to SmolLM2 converted from the embedded GGUF (base model: pass the merged
base+adapter folder of `finllm-edge convert` to measure the finance model). GGUF files default to
the convert pipeline's outputs when given, else they are quantized here from an F16 GGUF of HF_DIR
with the pinned llama.cpp (llama_cpp.llama_model_quantize) into the finllm-edge cache.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HELD_OUT = (
    "Net interest margin compressed by eight basis points as deposit costs rose faster than loan yields. "
    "The bank set aside more provisions for commercial real estate, citing office vacancies, while its "
    "common equity tier one ratio held at 12.1 percent. Management expects fee income to recover in the "
    "second half as capital markets activity normalises, and reiterated its target of a 15 percent return "
    "on tangible equity by 2027. Credit card charge-offs rose to 3.4 percent, in line with seasonal "
    "patterns, and the loan-to-deposit ratio fell to 78 percent after a shift of balances into money market "
    "funds. The dividend was maintained and the buyback authorisation was increased by two billion dollars."
)


def gguf_logits(path: Path, ids: list[int], n_threads: int) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=len(ids) + 8, n_threads=n_threads, logits_all=True, verbose=False)
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    return out


def quantize_ggufs(hf_dir: Path, cache: Path) -> dict[str, Path]:
    """F16 GGUF of hf_dir with llama.cpp's convert_hf_to_gguf.py, then Q4_0 / Q4_K_M with libllama."""
    import ctypes
    import subprocess

    import llama_cpp

    from finllm_edge.native.fetch import llama_src_dir  # the pinned llama.cpp tree

    src = Path(llama_src_dir())
    f16 = cache / f"{hf_dir.name}.F16.gguf"
    if not f16.exists():
        subprocess.run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(hf_dir), "--outtype", "f16",
                        "--outfile", str(f16)], check=True)
    out = {}
    for name, ftype in (("Q4_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0), ("Q4_K_M", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M)):
        dst = cache / f"{hf_dir.name}.{name}.gguf"
        if not dst.exists():
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftype
            rc = llama_cpp.llama_model_quantize(str(f16).encode(), str(dst).encode(), ctypes.byref(params))
            if rc != 0:
                raise SystemExit(f"llama_model_quantize {name} failed ({rc})")
        out[name] = dst
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hf", type=Path, default=None)
    ap.add_argument("--onnx", type=Path, default=None, help="an existing ONNX int4 folder (else exported here)")
    ap.add_argument("--q4_0", type=Path, default=None)
    ap.add_argument("--q4_k_m", type=Path, default=None)
    ap.add_argument("--n-prompt", type=int, default=64)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("out/bench_onnx_vs_gguf.json"))
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from finllm_edge.engine import Engine, EngineOptions
    from finllm_edge.models import default_model_path
    from finllm_edge.onnx_engine import OnnxEngine
    from finllm_edge.paths import cache_dir
    from finllm_edge_convert.onnx_checks import hf_logits, onnx_logits
    from finllm_edge_convert.onnx_export import export_onnx
    from finllm_edge_convert.onnx_reference import hf_dir_from_gguf

    cache = cache_dir() / "bench-onnx"
    cache.mkdir(parents=True, exist_ok=True)
    hf = args.hf or hf_dir_from_gguf(default_model_path(), cache_dir() / "hf" / "SmolLM2-135M-Instruct")
    onnx_dir = args.onnx or cache / f"{hf.name}.onnx-int4"
    if not onnx_dir.exists():
        export_onnx(hf, onnx_dir, checks=False)
    ggufs = {"Q4_0": args.q4_0, "Q4_K_M": args.q4_k_m}
    if not all(ggufs.values()):
        made = quantize_ggufs(hf, cache)
        ggufs = {k: v or made[k] for k, v in ggufs.items()}

    ids = AutoTokenizer.from_pretrained(hf)(HELD_OUT)["input_ids"]
    ref = hf_logits(hf, ids).argmax(-1)
    rows = []
    bench = dict(n_prompt=args.n_prompt, n_gen=args.n_gen, repetitions=args.repetitions, warmup=1)
    n_ctx = args.n_prompt + args.n_gen + 8
    with OnnxEngine(onnx_dir, n_threads=args.threads, n_ctx=n_ctx) as eng:
        prof = eng.benchmark(**bench)
    top1 = float((onnx_logits(onnx_dir, ids, window=len(ids), n_threads=args.threads).argmax(-1) == ref).mean())
    rows.append(("ONNX int4 (ORT-genai)", prof, top1))
    for name, path in ggufs.items():
        with Engine(path, options=EngineOptions(n_threads=args.threads, n_ctx=n_ctx)) as eng:
            prof = eng.benchmark(**bench)
        top1 = float((gguf_logits(path, ids, args.threads).argmax(-1) == ref).mean())
        rows.append((f"GGUF {name} (llama.cpp)", prof, top1))

    hdr = f"{'artifact':<24}{'size MiB':>9}{'bpw':>6}{'TTFT ms':>9}{'pp tok/s':>10}{'tg tok/s':>10}{'top-1 vs fp32':>15}"
    print(f"SmolLM2-135M-Instruct ({'--hf ' + str(args.hf) if args.hf else 'base, no adapter'}), "
          f"{args.threads} threads, pp{args.n_prompt}+tg{args.n_gen}, {len(ids)} held-out tokens")
    print(hdr)
    for name, p, t1 in rows:
        print(f"{name:<24}{p['model_size_bytes'] / 2**20:>9.1f}{p['bits_per_weight']:>6.2f}{p['ttft_ms']:>9.1f}"
              f"{p['prefill_tok_s']:>10.1f}{p['decode_tok_s']:>10.1f}{100 * t1:>14.1f}%")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"hf_reference": str(hf), "held_out_tokens": len(ids),
                                    "rows": [{"artifact": n, "top1_vs_fp32": t, "profile": p} for n, p, t in rows]},
                                   indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
