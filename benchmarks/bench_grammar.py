"""Decode-speed cost of JSON-schema decoding: finllm-edge's core against llama-cpp-python's grammar
path, same GGUF, same grammar, same run.

For each model (SmolLM2-135M-Instruct re-quantized to Q4_0 and Q4_K_M with the pinned
llama-quantize) and each of a few finance schemas, four configurations are timed in every round:

    ours-free      Engine.generate(prompt)                        (no constraint)
    ours-json      Engine.generate(prompt, json_schema=schema)    (the core converts + constrains)
    lcp-free       Llama.create_completion(prompt)
    lcp-json       Llama.create_completion(prompt, grammar=LlamaGrammar.from_string(<the core's GBNF>))

Both sides get the same chat-rendered prompt text, greedy decoding, the same threads and n_ctx,
and the same grammar text (the core's conversion of the schema), so the difference is the
sampling path: the core checks the unconstrained argmax against the grammar and masks the
vocabulary only when it is refused; llama-cpp-python runs the grammar sampler over the whole
vocabulary for every token. Decode tok/s = (tokens - 1) / (time of the last streamed token - time
of the first), wall clock in this process for both sides. Rounds rotate the order of the four;
figures are medians of per-round ratios. Quote ratios, not absolute speeds (shared 2-core host).

    flock /tmp/fe-bench.lock python benchmarks/bench_grammar.py [--rounds 5] [--threads 2] [--out out/bench/grammar]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCHEMAS = {
    "figure": {"type": "object", "properties": {
        "metric": {"enum": ["revenue", "net income", "operating income"]},
        "value": {"type": "number"}, "unit": {"enum": ["thousands", "millions", "billions"]},
        "currency": {"enum": ["USD", "EUR", "GBP"]}, "period": {"type": "string", "maxLength": 12}},
        "required": ["metric", "value", "unit", "currency", "period"]},
    "sentiment": {"type": "object", "properties": {
        "sentiment": {"enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
        "reasons": {"type": "array", "minItems": 1, "maxItems": 3, "items": {"type": "string", "maxLength": 40}}},
        "required": ["sentiment", "confidence", "reasons"]},
}
TEXT = ("Acme Corp reported revenue of $120.0 million for FY2024, up from $100.0 million in FY2023. Net income "
        "was $15.0 million. Management expects margins to improve next year.")
QUESTION = {"figure": "Extract the revenue figure of this text as JSON.",
            "sentiment": "Classify the sentiment of this news item as JSON."}
FREE_QUESTION = "Explain in detail what this text says about the company's results."


def cache_dir() -> Path:
    from finllm_edge.paths import cache_dir as cd
    return cd()


def model_paths(names: list[str]) -> dict[str, Path]:
    """Q4_0/Q4_K_M of SmolLM2 in the bench-models cache, made with the pinned llama-quantize if missing."""
    from finllm_edge.models import default_model_path
    out = {}
    src = default_model_path()
    for q in names:
        p = cache_dir() / "bench-models" / f"{src.name.split('.')[0]}.{q}.gguf"
        if not p.exists():
            tools = sorted(glob.glob(str(cache_dir() / "llama" / "host-*" / "prefix" / "bin" / "llama-quantize")))
            if not tools:
                raise SystemExit("llama-quantize is not built: run finllm-edge native build first")
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_suffix(".tmp")
            subprocess.run([tools[0], "--allow-requantize", str(src), str(tmp), q, "2"], check=True,
                           capture_output=True)
            os.replace(tmp, p)
        out[q] = p
    return out


def timed(chunks) -> tuple[str, int, float]:
    """(text, tokens, decode tok/s) of a stream of text chunks (one per token)."""
    text, stamps = [], []
    for piece in chunks:
        stamps.append(time.perf_counter())
        text.append(piece)
    n = len(stamps)
    rate = (n - 1) / (stamps[-1] - stamps[0]) if n > 2 and stamps[-1] > stamps[0] else float("nan")
    return "".join(text), n, rate


class Ours:
    def __init__(self, model: Path, threads: int, n_ctx: int) -> None:
        from finllm_edge import Engine
        self.e = Engine(model, n_threads=threads, n_ctx=n_ctx, prefix_reuse=False)

    def render(self, question: str) -> str:
        return self.e.format_chat([{"role": "user", "content": f"{question}\n\n{TEXT}"}])

    def run(self, prompt: str, max_tokens: int, schema: dict | None) -> tuple[str, int, float]:
        return timed(self.e.generate(prompt, max_tokens, parse_special=True, json_schema=schema))


class Theirs:
    def __init__(self, model: Path, threads: int, n_ctx: int) -> None:
        from llama_cpp import Llama
        self.llm = Llama(model_path=str(model), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                         n_batch=512, verbose=False)

    def run(self, prompt: str, max_tokens: int, gbnf: str | None) -> tuple[str, int, float]:
        from llama_cpp import LlamaGrammar
        grammar = LlamaGrammar.from_string(gbnf, verbose=False) if gbnf else None
        self.llm.reset()
        chunks = (c["choices"][0]["text"] for c in self.llm.create_completion(
            prompt, max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.0, grammar=grammar, stream=True))
        return timed(chunks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--quants", default="Q4_0,Q4_K_M")
    ap.add_argument("--schemas", default=",".join(SCHEMAS), help=f"of {', '.join(SCHEMAS)}")
    ap.add_argument("--out", type=Path, default=Path("out/bench/grammar"))
    a = ap.parse_args(argv)
    from finllm_edge.structured import json_schema_to_grammar

    results: dict = {"rounds": a.rounds, "threads": a.threads, "max_tokens": a.max_tokens, "models": {}}
    for quant, path in model_paths(a.quants.split(",")).items():
        ours, theirs = Ours(path, a.threads, 1024), Theirs(path, a.threads, 1024)
        per_schema = {}
        for name in a.schemas.split(","):
            schema = SCHEMAS[name]
            gbnf = json_schema_to_grammar(schema)
            prompt, free_prompt = ours.render(QUESTION[name]), ours.render(FREE_QUESTION)
            configs = {
                "ours-free": (ours.run, free_prompt, None),
                "ours-json": (ours.run, prompt, schema),
                "lcp-free": (theirs.run, free_prompt, None),
                "lcp-json": (theirs.run, prompt, gbnf),
            }
            names = list(configs)
            for n in names:  # warm-up
                fn, p, c = configs[n]
                fn(p, a.max_tokens, c)
            rows: list[dict] = []
            for r in range(a.rounds):
                order = names[r % 4:] + names[:r % 4]
                row = {}
                for n in order:
                    fn, p, c = configs[n]
                    text, n_tok, rate = fn(p, a.max_tokens, c)
                    row[n] = {"tok_s": rate, "n_tokens": n_tok, "text": text}
                rows.append(row)
            med = statistics.median
            parsed = all(_parses(row[n]["text"]) for row in rows for n in ("ours-json", "lcp-json"))
            per_schema[name] = {
                "ours_json_over_free": med(r["ours-json"]["tok_s"] / r["ours-free"]["tok_s"] for r in rows),
                "lcp_json_over_free": med(r["lcp-json"]["tok_s"] / r["lcp-free"]["tok_s"] for r in rows),
                "ours_json_over_lcp_json": med(r["ours-json"]["tok_s"] / r["lcp-json"]["tok_s"] for r in rows),
                "ours_free_over_lcp_free": med(r["ours-free"]["tok_s"] / r["lcp-free"]["tok_s"] for r in rows),
                "tok_s": {n: med(r[n]["tok_s"] for r in rows) for n in names},
                "json_tokens": {n: rows[-1][n]["n_tokens"] for n in ("ours-json", "lcp-json")},
                "all_json_parse": parsed,
                "same_json_text": rows[-1]["ours-json"]["text"].strip() == rows[-1]["lcp-json"]["text"].strip(),
                "example": rows[-1]["ours-json"]["text"],
            }
        results["models"][quant] = per_schema
        ours.e.close()
        del theirs
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_grammar.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print(f"\nJSON-schema decoding cost, SmolLM2-135M, {a.threads} threads, greedy, median of {a.rounds} rounds")
    print("| model | schema | ours json/free | llama-cpp-python json/free | ours json / lcp json | "
          "ours free / lcp free | all parse | same text |")
    print("|---|---|---|---|---|---|---|---|")
    for quant, per in results["models"].items():
        for name, f in per.items():
            print(f"| {quant} | {name} | {f['ours_json_over_free']:.2f} | {f['lcp_json_over_free']:.2f} | "
                  f"{f['ours_json_over_lcp_json']:.2f} | {f['ours_free_over_lcp_free']:.2f} | "
                  f"{f['all_json_parse']} | {f['same_json_text']} |")
    return 0


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
