"""`finllm-edge serve [MODEL]`: a local OpenAI-compatible HTTP server over the core."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .argtypes import int_range, positive_int
from .cli_run import add_engine_args

DESCRIPTION = """\
Serve a GGUF model over HTTP with OpenAI's API, on 127.0.0.1 by default:
  POST /v1/chat/completions   chat (the model's chat template), "stream": true for SSE chunks
  POST /v1/completions        raw-prompt completion
  GET  /v1/models             the one model served (its id is --model-id)
  GET  /health                status, mode, requests in flight, the drift state
  GET  /v1/drift              with --drift-ref: the drift monitor's state JSON (what users ask vs
                              the tuning text), the file `finllm-edge drift report` reads

Use it with the official openai client:
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
  r = client.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1",
        messages=[{"role": "user", "content": "What is EBITDA?"}], max_tokens=64)
  print(r.choices[0].message.content, r.usage)

Request fields: model, messages | prompt, max_tokens (chat: max_completion_tokens too; default:
until end of turn or a full context), temperature (default 0 = greedy, the core's), top_p,
seed, stop (up to 4), stream, stream_options.include_usage, n (1 only), ignore_eos (llama.cpp's
extension). Other OpenAI fields at a non-default value (tools, logprobs, penalties, ...) are a
400 saying so. Errors come in OpenAI's shape {"error": {message, type, param, code}}.

Concurrency: --parallel 1 (default) serves requests in turn on one session; --parallel N
decodes N requests together in one batch with the core's scheduler (one copy of the weights).
At most --max-pending requests run or wait at once; more get 503 right away.

Flash attention (--flash-attn auto, the default): on with --parallel N > 1, where it decodes
1.1-1.3x faster (as llama-server's default); off with --parallel 1, where it would make the
session's prefix reuse coarser (see the README). A request's tokens equal a solo run's with the
same setting (with flash attention on: up to 256 tokens of context, or at any length with -t 1).

Prefix reuse: a request that starts like an earlier one (a system prompt) evaluates only the rest,
with the same tokens as without reuse. --reuse-generated also reuses the K/V of the answers a chat
sends back (as llama-server does): only the new message is evaluated, and the tokens are no longer
identical to a run without reuse. Without it, once a request ends and no other waits, the server
evaluates the answer again as a prompt would (settle; the next request stops it at once), so a
chat's next turn reuses the answer it sends back and the tokens stay exact; --no-settle turns that
idle-time work off.

Drift (--drift-ref FILE, made by `finllm-edge convert --drift-ref` or `finllm-edge drift ref`):
every request's question (a chat's last user message; a prompt's new tokens) is counted by the
core's monitor, as on the phone; GET /v1/drift says whether what users ask has moved away from the
tuning text (state none / watch / drift, the KL, the thresholds). A reference made for another
tokenizer is refused at start.
"""

EPILOG = """\
examples:
  finllm-edge serve                                   # the embedded SmolLM2, 127.0.0.1:8000
  finllm-edge serve model.gguf --port 8080 --parallel 4 -c 2048
  finllm-edge serve out/convert/model-q4_0.gguf --drift-ref out/convert/drift-ref.fedrift
  finllm-edge serve --parallel 8 -b 63                # a long system prompt shared by every request:
                                                      # prompts stay on flash attention's row kernel, so a
                                                      # request re-evaluates 2 reused tokens, not 64
  curl -s http://127.0.0.1:8000/v1/drift > drift-state.json && \
       finllm-edge drift report drift-state.json --model out/convert/model-q4_0.gguf -o out/drift
  curl -s http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"model": "SmolLM2-135M-Instruct.Q4_1", "messages": [{"role": "user", "content": "Hi"}]}'

There is no authentication and no TLS: keep --host on loopback (127.0.0.1). Another host
prints a warning, and anyone who reaches that address can use the model.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model", nargs="?", default=None,
                        help="GGUF file (default: the embedded SmolLM2-135M-Instruct Q4_1)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; anything else warns: no auth, no TLS)")
    parser.add_argument("--port", type=int_range(0, 65535), default=8000, help="TCP port (default 8000; 0: any free)")
    parser.add_argument("--model-id", default=None,
                        help="the model name clients send as 'model' (default: the GGUF file name without .gguf)")
    parser.add_argument("--parallel", "-np", type=int_range(1, 64), default=1,
                        help="requests decoded together (default 1: in turn on one session; N > 1: the core's "
                             "scheduler with N slots of --ctx tokens each)")
    parser.add_argument("--flash-attn", "-fa", choices=["auto", "on", "off"], default="auto",
                        help="llama.cpp's flash attention (default auto: on with --parallel > 1, off with 1)")
    parser.add_argument("--reuse-generated", action="store_true",
                        help="also reuse the cached answers a chat sends back (faster chats; tokens may then differ "
                             "from a run without reuse)")
    parser.add_argument("--no-settle", dest="settle", action="store_false",
                        help="do not evaluate answers again while idle (by default a chat's next turn then reuses "
                             "the answer it sends back, exactly)")
    parser.add_argument("--drift-ref", type=Path, default=None, metavar="FILE",
                        help="monitor what requests ask against this drift reference (.fedrift); state at GET "
                             "/v1/drift")
    parser.add_argument("--max-pending", type=positive_int, default=32,
                        help="requests running or waiting at most; more get 503 (default 32)")
    parser.add_argument("--max-body-bytes", type=int_range(1024), default=1 << 20,
                        help="largest request body accepted; larger ones get 413 before being read (default 1 MiB)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level (default info)")
    add_engine_args(parser)


def main(args: argparse.Namespace) -> int:
    try:
        from finllm_edge.lab.serve import ServeBackend, serve
    except ImportError as exc:
        raise ValueError(f"`finllm-edge serve` needs the serve extra ({exc}); run: "
                         f"pip install 'finllm-edge[serve]'") from None
    backend = ServeBackend(args.model, n_ctx=args.ctx, n_threads=args.threads, parallel=args.parallel,
                           max_pending=args.max_pending,
                           flash_attn=None if args.flash_attn == "auto" else args.flash_attn == "on",
                           reuse_generated=args.reuse_generated, drift_ref=args.drift_ref, n_batch=args.batch,
                           settle=args.settle)
    try:
        model_id = args.model_id or backend.model_path.name.removesuffix(".gguf")
        print(f"finllm-edge serve: {backend.model_path} as '{model_id}' ({backend.mode}, parallel {args.parallel}, "
              f"n_ctx {args.ctx}, flash attention {'on' if backend.flash_attn else 'off'}"
              f"{f', drift monitor on {args.drift_ref}' if backend.drift else ''}) "
              f"on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
        serve(backend, model_id, host=args.host, port=args.port, max_body_bytes=args.max_body_bytes,
              log_level=args.log_level)
    finally:
        backend.close()
    return 0
