#!/usr/bin/env python3
"""How conversion time and memory grow with model size.

Random-initialised Llama configs of about 135M, 0.5B and 1.1B parameters (fp16 safetensors,
SmolLM2 tokenizer) + a random r=16 q/k/v/o LoRA adapter go through the conversion stages
check -> merge -> gguf (F16) -> quantize (Q4_0), each size in a fresh child process.
Parity and quality are left out: they run the whole model in torch, and these are random weights.

Per size: seconds per stage, peak RSS (VmHWM) and the peak of anonymous (non-file) RSS,
sampled every 0.1 s. File-backed pages are the memory-mapped safetensors being streamed.

    flock ~/.cache/finllm-edge/heavy.lock python benchmarks/bench_convert_scale.py [--sizes 135m,0.5b,1.1b]

Prints a table and writes out/bench/convert_scale.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = {   # name -> Llama config (vocab 49152: the SmolLM2 tokenizer is reused)
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3, tie_word_embeddings=True),
    "0.5b": dict(hidden_size=1280, intermediate_size=3456, num_hidden_layers=24, num_attention_heads=20,
                 num_key_value_heads=4, tie_word_embeddings=True),
    "1.1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, tie_word_embeddings=False),
}


def rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class AnonPeak(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = 0, False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, rss_kb("RssAnon"))
            time.sleep(0.1)


def make_inputs(work: Path, size: str) -> tuple[Path, Path, int]:
    """Random fp16 base folder + random adapter, written tensor by tensor (never a whole model in RAM)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from finllm_edge.models import default_model_path
    from finllm_edge_convert.safetensors_stream import StreamingSafetensorsWriter

    base, lora = work / "base", work / "lora"
    cfg = LlamaConfig(vocab_size=49152, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
                      bos_token_id=1, eos_token_id=2, **SIZES[size])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    shapes = {n: tuple(p.shape) for n, p in model.state_dict().items()
              if not (cfg.tie_word_embeddings and n == "lm_head.weight")}
    n_params = sum(torch.Size(s).numel() for s in shapes.values())
    base.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    with StreamingSafetensorsWriter(base / "model.safetensors", {n: (s, "float16") for n, s in shapes.items()},
                                    {"format": "pt"}) as w:
        for n, s in shapes.items():
            t = torch.ones(s) if "norm" in n else torch.randn(s, generator=g) * 0.02
            w.write(n, t.half())
    cfg.save_pretrained(base)
    p = default_model_path()
    AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name).save_pretrained(base)
    r, targets = 16, ("q_proj", "k_proj", "v_proj", "o_proj")
    lora.mkdir(parents=True, exist_ok=True)
    lshapes = {}
    for n, s in shapes.items():
        mod = n.removesuffix(".weight")
        if mod.rsplit(".", 1)[-1] in targets:
            lshapes[f"base_model.model.{mod}.lora_A.weight"] = ((r, s[1]), "float32")
            lshapes[f"base_model.model.{mod}.lora_B.weight"] = ((s[0], r), "float32")
    with StreamingSafetensorsWriter(lora / "adapter_model.safetensors", lshapes, {"format": "pt"}) as w:
        for n, (s, _) in lshapes.items():
            w.write(n, torch.randn(s, generator=g) * 0.01)
    (lora / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": 32, "target_modules": list(targets), "bias": "none",
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "rank_pattern": {}, "alpha_pattern": {},
        "task_type": "CAUSAL_LM"}))
    return base, lora, n_params


def child(size: str, work: Path) -> dict:
    """Run the stages in this (fresh) process and measure them."""
    from finllm_edge_convert import pipeline

    base, lora, n_params = make_inputs(work, size)
    hwm_inputs = rss_kb("VmHWM")
    opts = pipeline.ConvertOptions(base=base, lora=lora, out=work / "out", quants=["q4_0"], parity=False,
                                   cross_check=False, progress=False).resolved()
    ctx = pipeline.Context(opts)
    stages = [s for s in pipeline.build_stages(opts) if s.name in ("check", "merge", "gguf", "quantize")]
    import torch  # noqa: F401  (imports are part of the baseline, not of the conversion)
    import transformers  # noqa: F401

    baseline_anon = rss_kb("RssAnon")
    mon = AnonPeak()
    mon.start()
    # the peak so far belongs to input generation; reset it so VmHWM covers the conversion only
    Path("/proc/self/clear_refs").write_text("5")
    t0 = time.perf_counter()
    pipeline.run_stages(ctx, stages)
    total = time.perf_counter() - t0
    mon.stop = True
    mon.join()
    return {"size": size, "n_params": n_params, "seconds": ctx.seconds, "total_seconds": round(total, 1),
            "peak_rss_mb": round(rss_kb("VmHWM") / 1024, 1), "peak_anon_rss_mb": round(mon.peak / 1024, 1),
            "baseline_anon_rss_mb": round(baseline_anon / 1024, 1),
            "input_gen_peak_rss_mb": round(hwm_inputs / 1024, 1),
            "f16_gguf_mb": round(Path(ctx.artifacts["f16"]["path"]).stat().st_size / 2**20, 1),
            "q4_0_gguf_mb": round(Path(ctx.artifacts["q4_0"]["path"]).stat().st_size / 2**20, 1),
            "fp16_model_mb": round(n_params * 2 / 2**20, 1)}


def table(rows: list[dict]) -> str:
    out = ["| size | params | check s | merge s | gguf F16 s | quantize Q4_0 s | total s | peak RSS MB | "
           "peak anon RSS MB (baseline) | fp16 model MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["seconds"]
        out.append(f"| {r['size']} | {r['n_params'] / 1e6:.0f}M | {s['check']} | {s['merge']} | {s['gguf']} | "
                   f"{s['quantize']} | {r['total_seconds']} | {r['peak_rss_mb']} | "
                   f"{r['peak_anon_rss_mb']} ({r['baseline_anon_rss_mb']}) | {r['fp16_model_mb']} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "bench" / "convert_scale_work")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "bench" / "convert_scale.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.work / args.child)))
        return 0
    import shutil

    rows = []
    for size in args.sizes.split(","):
        shutil.rmtree(args.work / size, ignore_errors=True)
        proc = subprocess.run([sys.executable, __file__, "--child", size, "--work", str(args.work)],
                              capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(line[7:]))
        print(f"{size}: {rows[-1]}", file=sys.stderr, flush=True)
        shutil.rmtree(args.work / size, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import platform

    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
