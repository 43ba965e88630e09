"""`finllm-edge` command line. Each verb lives in its own module, imported only when used,
so `finllm-edge run` never pays for (or needs) torch.

A verb module defines `configure(parser)` (adds its arguments, importing nothing heavy)
and `main(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

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
    "serve": ("finllm_edge.lab.cli_serve",
              "a local OpenAI-compatible HTTP server (chat, completions, SSE streaming) on 127.0.0.1"),
    "drift": ("finllm_edge.lab.cli_drift",
              "drift of what users ask vs the tuning text: make a reference, report what moved, export for re-tuning"),
    "native": ("finllm_edge.native.cli",
               "fetch the pinned llama.cpp and build native/ (host, linux-aarch64, sanitizers)"),
}


DEBUG_ENV = "FINLLM_EDGE_DEBUG"
DEBUG_HELP = f"on an error, print the Python traceback too (same as {DEBUG_ENV}=1)"


def build_parser(verbs: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finllm-edge",
        description="finllm-edge: convert a LoRA-tuned finance LLM to 4-bit GGUF/ONNX and run it on phones.",
        epilog="Run `finllm-edge VERB --help` for the options of each verb.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (module, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        # also accepted after the verb; SUPPRESS keeps a --debug given before the verb
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        if verbs is None or verb in verbs:
            try:
                mod = importlib.import_module(module)
            except ImportError as exc:
                p.set_defaults(_unavailable=f"`finllm-edge {verb}` is not available: {exc}")
                continue
            mod.configure(p)
            p.set_defaults(_module=module)
    return parser


def describe_error(exc: BaseException) -> str:
    """One paragraph for the user: the error's own message, with the file name for OS errors."""
    if isinstance(exc, OSError) and not isinstance(exc, FinLLMEdgeError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text


def exit_code(exc: BaseException) -> int:
    """2: the command or its input needs changing (a bad option value, a missing or unreadable file,
    a corrupt model): ValueError and OSError, typed or not. 1: a typed error of an operation that
    failed otherwise (a conversion, a build, a download, a device)."""
    return 2 if isinstance(exc, (ValueError, OSError)) else 1


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
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    mod = importlib.import_module(args._module)
    try:
        return int(mod.main(args) or 0)
    except (FinLLMEdgeError, ValueError, OSError) as exc:
        if debug:
            traceback.print_exc()
        code = exit_code(exc)
        # a usage error needs the message only; a failed operation may need the traceback for a bug report
        hint = "" if debug or code == 2 else f" (--debug or {DEBUG_ENV}=1 shows the traceback)"
        print(f"finllm-edge {args.verb}: error: {describe_error(exc)}{hint}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print(f"finllm-edge {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
