"""`finllm-edge run [MODEL] -p PROMPT`: stream an answer, then print its one-line latency profile."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finllm_edge.fileio import atomic_write_json

from .argtypes import float_range, int_range, non_negative_int, positive_int


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-t", "--threads", type=positive_int, default=None,
                        help="threads (default: one per performance core)")
    parser.add_argument("-c", "--ctx", type=positive_int, default=2048, help="context size in tokens (default 2048)")
    parser.add_argument("-b", "--batch", type=positive_int, default=512, help="prompt batch size (default 512)")


def _core_defaults() -> dict:
    """The core's sampling defaults (fe_sampling_default_params), for --help; {} if the library is not built."""
    try:
        from finllm_edge import _native

        p = _native.lib().fe_sampling_default_params()
        return {f: getattr(p, f) for f, _ in p._fields_}
    except Exception:  # noqa: BLE001 - help text only
        return {}


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    # Every default is the core's (one place for Python, JNI and fe-bench): options left unset are
    # not passed, so the core decides.
    d = _core_defaults()

    def core(name: str, fmt: str = "{}") -> str:
        return f"default: the core's, {fmt.format(d[name])}" if name in d else "default: the core's"

    g = parser.add_argument_group("sampling (default: the core's: greedy)")
    g.add_argument("--temp", type=float_range(0.0), default=None, help="temperature; 0 = greedy (" + core(
        "temperature", "{:g}") + ")")
    g.add_argument("--top-k", type=non_negative_int, default=None, help="0 disables (" + core("top_k") + ")")
    g.add_argument("--top-p", type=float_range(0.0, 1.0, lo_open=True), default=None,
                   help="1 disables (" + core("top_p", "{:.2f}") + ")")
    g.add_argument("--min-p", type=float_range(0.0, 1.0), default=None,
                   help="0 disables; llama.cpp models only (" + core("min_p", "{:.2f}") + ")")
    g.add_argument("--repeat-penalty", type=float_range(0.0, lo_open=True), default=None,
                   help="1.0 disables (" + core("repeat_penalty", "{:g}") + ")")
    g.add_argument("--repeat-last-n", type=int_range(-1), default=None,
                   help="-1: the context size (" + core("repeat_last_n") + ")")
    g.add_argument("--seed", type=int, default=None, help="seed of sampled generations (default: random)")
    g.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help="GGUF file (default: the embedded SmolLM2-135M-Instruct Q4_1)")
    parser.add_argument("-p", "--prompt", required=True, help="the question or prompt")
    parser.add_argument("-n", "--max-tokens", type=positive_int, default=256,
                        help="maximum tokens to generate (default 256)")
    chat = parser.add_mutually_exclusive_group()
    chat.add_argument("--chat", dest="chat", action="store_true", default=None,
                      help="format the prompt with the model's chat template (default when the model has one)")
    chat.add_argument("--no-chat", dest="chat", action="store_false", help="send the prompt as raw text")
    parser.add_argument("--system", default=None, help="system message (with --chat)")
    parser.add_argument("--profile-out", type=Path, default=None, help="write the LatencyProfile JSON here")
    parser.add_argument("--quiet-profile", action="store_true", help="do not print the one-line profile")
    out = parser.add_argument_group("structured output (the core converts and bounds it; the answer ends when "
                                    "it is complete)").add_mutually_exclusive_group()
    out.add_argument("--json-schema", metavar="SCHEMA", default=None,
                     help="answer as JSON valid against this JSON Schema: inline JSON text or a file path")
    out.add_argument("--json", action="store_true", help="answer as any JSON object (response_format json_object)")
    out.add_argument("--grammar", metavar="GBNF", default=None,
                     help="answer in this GBNF grammar (llama.cpp syntax, start rule 'root'): inline text or a file")
    parser.add_argument("--adapter", action="append", default=[], metavar="FILE[:SCALE]",
                        help="a GGUF LoRA adapter applied at run time (convert --adapter-gguf writes "
                             "adapter-f16.gguf for the base-<quant>.gguf files); repeatable; SCALE default 1")
    add_engine_args(parser)
    add_sampling_args(parser)


def sampling_from_args(args: argparse.Namespace):
    from finllm_edge.engine import SamplingOptions

    return SamplingOptions(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                           repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n, seed=args.seed)


def _inline_or_file(value: str, inline_marker: str, what: str) -> str:
    """The text itself when it looks inline, else the file's text (a regular file, at most 256 KiB)."""
    if inline_marker in value:
        return value
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {value!r} is neither inline text nor a file")
    limit = 256 * 1024
    if path.stat().st_size > limit:
        raise ValueError(f"{what}: {path} is larger than {limit} bytes")
    with open(path, encoding="utf-8") as f:
        return f.read(limit + 1)


def constraint_from_args(args: argparse.Namespace) -> dict:
    if getattr(args, "json_schema", None):
        return {"json_schema": _inline_or_file(args.json_schema, "{", "--json-schema")}
    if getattr(args, "grammar", None):
        return {"grammar": _inline_or_file(args.grammar, "::=", "--grammar")}
    if getattr(args, "json", False):
        return {"response_format": {"type": "json_object"}}
    return {}


def one_line(p: dict) -> str:
    """The one-line summary `finllm-edge run` prints after the answer."""
    tag = " [EMULATED]" if p.get("emulated") else ""
    return (f"[profile{tag}] load {p['load_ms']:.0f} ms | TTFT {p['ttft_ms']:.1f} ms | "
            f"prefill {p['prefill_tok_s']:.1f} tok/s ({p['n_prompt']} tok) | "
            f"decode {p['decode_tok_s']:.1f} tok/s ({p['n_gen']} tok) | "
            f"p50/p90/p99 {p['token_ms_p50']:.1f}/{p['token_ms_p90']:.1f}/{p['token_ms_p99']:.1f} ms | "
            f"e2e {p['e2e_ms']:.0f} ms | peak RSS {p['peak_rss_mb']:.0f} MB | "
            f"{p['n_threads']} threads | {p['model_type']} {p['bits_per_weight']:.2f} bpw")


def main(args: argparse.Namespace) -> int:
    from finllm_edge.engine import Engine, EngineOptions
    from finllm_edge.onnx_engine import OnnxEngine, is_onnx_model_dir

    opts = EngineOptions(n_threads=args.threads, n_ctx=args.ctx, n_batch=args.batch, seed=args.seed)
    engine_cls = OnnxEngine if args.model is not None and is_onnx_model_dir(args.model) else Engine
    with engine_cls(args.model, options=opts) as engine:
        if args.adapter:
            engine.set_adapters(dict(_load_adapter(engine, spec) for spec in args.adapter))
        use_chat = args.chat
        if use_chat is None:
            use_chat = bool(engine.metadata("tokenizer.chat_template"))
        kw = dict(sampling=sampling_from_args(args), stop=args.stop, **constraint_from_args(args))
        if use_chat:
            messages = ([{"role": "system", "content": args.system}] if args.system else [])
            messages.append({"role": "user", "content": args.prompt})
            stream = engine.chat(messages, args.max_tokens, **kw)
        else:
            stream = engine.generate(args.prompt, args.max_tokens, **kw)
        try:
            for piece in stream:
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            stream.close()
            sys.stdout.write("\n[interrupted]")
        sys.stdout.write("\n")
        profile = stream.profile
        if not args.quiet_profile:
            print(one_line(profile), flush=True)
        if args.profile_out:
            atomic_write_json(args.profile_out, profile)
            print(f"[profile] written to {args.profile_out}", file=sys.stderr)
    return 0


def _load_adapter(engine, spec: str):
    """'FILE' or 'FILE:SCALE' -> (Adapter, scale); the scale's range is the core's."""
    path, scale = spec, 1.0
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            path, scale = head, float(tail)
        except ValueError:
            path, scale = spec, 1.0
    if not hasattr(engine, "load_adapter"):
        raise ValueError("--adapter needs a GGUF model (the ONNX backend has no runtime adapters)")
    return engine.load_adapter(path), scale
