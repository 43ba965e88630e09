"""`finllm-edge` command line. Each verb lives in its own module, imported only when used,
so `finllm-edge run` never pays for (or needs) torch.

A verb module defines `configure(parser)` (adds its arguments, importing nothing heavy)
and `main(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from finllm_edge.errors import FinLLMEdgeError

# verb -> (module, one-line help). Order is the order of `finllm-edge --help`.
VERBS: dict[str, tuple[str, str]] = {
    "convert": ("finllm_edge_convert.cli",
                "base model + LoRA adapter -> merged -> GGUF/ONNX 4-bit, with quality report and manifest"),
    "run": ("finllm_edge.lab.cli_run", "generate an answer with a GGUF model and print its latency profile"),
    "bench": ("finllm_edge.lab.cli_bench",
              "benchmark one or more models: TTFT, prefill/decode tok/s, token latency percentiles"),
    "report": ("finllm_edge.lab.cli_report",
               "render latency profiles (ours, fe-bench, qemu, phones) as Markdown + PNG charts"),
    "emulate": ("finllm_edge.lab.emulate",
                "run fe-bench for aarch64 under qemu with a chosen CPU model (profiles flagged emulated)"),
    "device": ("finllm_edge.lab.device", "list phones over adb, read their CPU/thermal info, benchmark on them"),
    "native": ("finllm_edge.native.cli",
               "fetch the pinned llama.cpp and build native/ (host, linux-aarch64, sanitizers)"),
}


def build_parser(verbs: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finllm-edge",
        description="finllm-edge: convert a LoRA-tuned finance LLM to 4-bit GGUF/ONNX and run it on phones.",
        epilog="Run `finllm-edge VERB --help` for the options of each verb.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        if verbs is None or verb in verbs:
            try:
                mod = importlib.import_module(module)
            except ImportError as exc:
                p.set_defaults(_unavailable=f"`finllm-edge {verb}` is not available: {exc}")
                continue
            mod.configure(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([verb] if verb in VERBS else None)
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help()
        return 2
    if getattr(args, "_unavailable", None):
        print(f"finllm-edge: {args._unavailable}", file=sys.stderr)
        return 2
    mod = importlib.import_module(args._module)
    try:
        return int(mod.main(args) or 0)
    except FinLLMEdgeError as exc:
        print(f"finllm-edge {args.verb}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"finllm-edge {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
