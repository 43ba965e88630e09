"""Prefix reuse: finllm-edge's Engine against llama-cpp-python's prefix cache, same GGUF, same run.

Three workloads, each side by side (same model file, n_threads, n_ctx, n_batch; greedy; the same
prompt text, rendered once by the model's chat template):

1. repeat   - a ~300-token system prompt + question 1, then the same system prompt + question 2:
              TTFT of request 2 / request 1 (the issue's target: <= 0.10).
2. chat     - a 4-turn chat (scripted assistant answers, so both sides see the same text):
              TTFT per turn. --own-answers: each side sends back its own greedy answers instead, as
              a chat app does (the answers' K/V are then in the cache: llama-cpp-python reuses
              them; ours only with --reuse-generated, which gives up bit-exact reuse as it does,
              or with --settle: Engine.settle() after each answer, while the user would read it,
              evaluates the answer again as a prompt so that exact reuse takes it; its time is
              reported apart, as idle time, not in the next turn's TTFT).
3. cold     - a fresh process answers its first question after launch: with the state of an
              earlier process's first prompt (system prompt + question 1) saved to disk (ours:
              Engine.save_state/load_state; llama-cpp-python: LlamaDiskCache filled by that
              request) vs without; the new question shares the system prompt and the user turn's
              first tokens. Reported: load of the state + TTFT. The model's sha256 (which tags and
              checks our state file) comes from the cross-process hash index, as after any
              earlier launch.

Every measurement runs in a fresh worker process; the sides alternate (ours, theirs, then
theirs, ours in the next round) and each figure is the median over the rounds. TTFT is wall
time in the worker from the call to the first streamed text, for both sides. Quote the ratios:
absolute times on a shared 2-core machine are noise.

    python benchmarks/bench_prefix.py [--rounds 3] [--threads 1] [--model PATH] [--out out/bench/prefix]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYSTEM = ("You are a careful financial analyst at a regional bank. Answer in two sentences, cite the "
          "numbers you use, and say when the data is not enough. " + " ".join(
              f"Rule {i}: the loan-to-value ratio of segment {i} must stay below {60 + i}% and its coverage "
              f"above {1 + i / 10:.1f}x." for i in range(8)))
QUESTIONS = ["What is a loan covenant?", "What is net interest margin?", "Why do deposit costs rise?",
             "Which segment has the strictest rule?"]
ANSWERS = ["A covenant is a condition in a loan agreement that the borrower must meet.",
           "Net interest margin is interest income minus interest expense, over earning assets.",
           "Deposit costs rise when policy rates go up and banks compete for funding."]
MAX_TOKENS = 16


def _messages(turns: int) -> list[dict]:
    msgs = [{"role": "system", "content": SYSTEM}]
    for t in range(turns):
        msgs.append({"role": "user", "content": QUESTIONS[t]})
        if t < turns - 1:
            msgs.append({"role": "assistant", "content": ANSWERS[t]})
    return msgs


# ---------------------------------------------------------------- workers (one process each)

class Ours:
    def __init__(self, model: str, threads: int, n_ctx: int, flash_attn: bool = False,
                 reuse_generated: bool = False, settle: bool = False) -> None:
        from finllm_edge.engine import Engine

        self.engine = Engine(model, n_ctx=n_ctx, n_threads=threads, flash_attn=flash_attn,
                             reuse_generated=reuse_generated)
        self.settle = settle

    def idle(self) -> dict:
        """Between chat turns (the user reads the answer): Engine.settle() with --settle."""
        if not self.settle:
            return {}
        t0 = time.perf_counter()
        n = self.engine.settle()
        return {"settle_ms": 1e3 * (time.perf_counter() - t0), "settled_tokens": n}

    def render(self, msgs: list[dict], add_generation_prompt: bool = True) -> str:
        return self.engine.format_chat(msgs, add_generation_prompt)

    def ttft(self, prompt: str) -> tuple[float, dict]:
        t0 = time.perf_counter()
        stream = self.engine.generate(prompt, MAX_TOKENS, parse_special=True, temperature=0.0)
        first = None
        parts = []
        for piece in stream:
            if first is None:
                first = time.perf_counter() - t0
            parts.append(piece)
        prof = stream.profile
        return 1e3 * (first if first is not None else time.perf_counter() - t0), {
            "core_ttft_ms": prof["ttft_ms"], "n_prompt": prof["n_prompt"], "n_prompt_reused": prof["n_prompt_reused"],
            "text": "".join(parts)}

    def save(self, prompt: str, path: str) -> None:
        self.engine.save_state(path, prompt=prompt, parse_special=True)

    def load(self, path: str) -> None:
        self.engine.load_state(path)


class Theirs:
    def __init__(self, model: str, threads: int, n_ctx: int, cache_dir: str | None = None,
                 flash_attn: bool = False) -> None:
        from llama_cpp import Llama, LlamaDiskCache, LlamaRAMCache

        self.llm = Llama(model_path=model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512,
                         flash_attn=flash_attn, verbose=False)
        self.llm.set_cache(LlamaDiskCache(cache_dir) if cache_dir else LlamaRAMCache())

    def idle(self) -> dict:
        return {}

    def ttft(self, prompt: str) -> tuple[float, dict]:
        t0 = time.perf_counter()
        first = None
        parts = []
        for chunk in self.llm.create_completion(prompt, max_tokens=MAX_TOKENS, temperature=0.0, stream=True):
            if first is None:
                first = time.perf_counter() - t0
            parts.append(chunk["choices"][0]["text"])
        return 1e3 * (first if first is not None else time.perf_counter() - t0), {"text": "".join(parts)}


def worker(a: argparse.Namespace) -> dict:
    ours_render = None
    if a.side == "ours":
        side = Ours(a.model, a.threads, a.n_ctx, a.flash_attn, a.reuse_generated, a.settle)
        ours_render = side
    else:
        side = Theirs(a.model, a.threads, a.n_ctx, a.cache_dir, a.flash_attn)
    render = ours_render or Ours(a.model, a.threads, 512)  # the same template text for both sides
    out: dict = {}
    if a.scenario == "repeat":
        t1, i1 = side.ttft(render.render(_messages(1)))
        msgs = _messages(1)
        msgs[-1]["content"] = QUESTIONS[1]
        t2, i2 = side.ttft(render.render(msgs))
        out = {"ttft1_ms": t1, "ttft2_ms": t2, "ratio": t2 / t1, "info": [i1, i2]}
    elif a.scenario == "chat" and a.own_answers:
        msgs, turns = [{"role": "system", "content": SYSTEM}], []
        for q in QUESTIONS[:4]:
            msgs.append({"role": "user", "content": q})
            turns.append(side.ttft(render.render(msgs)))
            turns[-1][1].update(side.idle())
            msgs.append({"role": "assistant", "content": turns[-1][1]["text"]})
        out = {"ttft_ms": [t for t, _ in turns], "info": [i for _, i in turns]}
    elif a.scenario == "chat":
        turns = []
        for t in range(1, 5):
            turns.append(side.ttft(render.render(_messages(t))))
            turns[-1][1].update(side.idle())
        out = {"ttft_ms": [t for t, _ in turns], "info": [i for _, i in turns]}
    elif a.scenario == "prepare":  # an earlier process answers question 1; its prompt's state is kept
        if a.side == "ours":  # the same text llama-cpp-python's disk cache keeps (it adds the answer)
            side.save(render.render(_messages(1)), a.state)
        else:
            side.ttft(render.render(_messages(1)))  # fills the disk cache with the system prompt + question 1
        out = {"ok": True}
    elif a.scenario == "cold":
        t0 = time.perf_counter()
        if a.side == "ours" and a.state:
            side.load(a.state)
        load_ms = 1e3 * (time.perf_counter() - t0)
        msgs = _messages(1)
        msgs[-1]["content"] = QUESTIONS[1]
        t, info = side.ttft(render.render(msgs))
        out = {"load_state_ms": load_ms, "ttft_ms": t, "first_answer_ms": load_ms + t, "info": info}
    return out


# ---------------------------------------------------------------- driver

def run_worker(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"worker {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--model", default=None, help="GGUF (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--flash-attn", action="store_true",
                    help="flash attention on both sides (ours: exact reuse at 64-token granularity)")
    ap.add_argument("--own-answers", action="store_true",
                    help="chat: each side sends back its own answers (a chat app) instead of scripted ones")
    ap.add_argument("--reuse-generated", action="store_true",
                    help="ours: Engine(reuse_generated=True) (reuses its answers' K/V; not bit-exact, like theirs)")
    ap.add_argument("--settle", action="store_true",
                    help="chat: ours calls Engine.settle() after each answer (exact reuse of the answer; "
                         "its time is reported apart as idle time)")
    ap.add_argument("--out", type=Path, default=Path("out/bench/prefix"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--side", choices=["ours", "theirs"], help=argparse.SUPPRESS)
    ap.add_argument("--scenario", help=argparse.SUPPRESS)
    ap.add_argument("--state", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.model is None:
        from finllm_edge.models import default_model_path

        a.model = str(default_model_path())
    if a.worker:
        print(json.dumps(worker(a)))
        return 0

    load_before = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None
    common = ["--model", a.model, "--threads", str(a.threads), "--n-ctx", str(a.n_ctx),
              *(["--flash-attn"] if a.flash_attn else []), *(["--own-answers"] if a.own_answers else []),
              *(["--reuse-generated"] if a.reuse_generated else []), *(["--settle"] if a.settle else [])]
    res: dict = {k: {"ours": [], "theirs": []} for k in ("repeat", "chat", "cold_state", "cold_none")}
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "system.festate")
        cache_dir = os.path.join(tmp, "llcpp-cache")
        run_worker(["--side", "ours", "--scenario", "prepare", "--state", state, *common])
        run_worker(["--side", "theirs", "--scenario", "prepare", "--cache-dir", cache_dir, *common])
        for r in range(a.rounds):
            order = ["ours", "theirs"] if r % 2 == 0 else ["theirs", "ours"]
            for scen in ("repeat", "chat"):
                for side in order:
                    res[scen][side].append(run_worker(["--side", side, "--scenario", scen, *common]))
            for side in order:
                extra = ["--state", state] if side == "ours" else ["--cache-dir", cache_dir]
                res["cold_state"][side].append(run_worker(["--side", side, "--scenario", "cold", *extra, *common]))
                res["cold_none"][side].append(run_worker(["--side", side, "--scenario", "cold", *common]))
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)

    med = statistics.median
    summary: dict = {"model": a.model, "threads": a.threads, "n_ctx": a.n_ctx, "rounds": a.rounds,
                     "flash_attn": a.flash_attn, "own_answers": a.own_answers, "reuse_generated": a.reuse_generated,
                     "settle": a.settle,
                     "loadavg_before": load_before,
                     "loadavg_after": open("/proc/loadavg").read().split()[:3] if load_before else None,
                     "max_tokens": MAX_TOKENS}
    for side in ("ours", "theirs"):
        rep = res["repeat"][side]
        chat = res["chat"][side]
        cs, cn = res["cold_state"][side], res["cold_none"][side]
        summary[side] = {
            "repeat_ttft1_ms": med(x["ttft1_ms"] for x in rep),
            "repeat_ttft2_ms": med(x["ttft2_ms"] for x in rep),
            "repeat_ratio": med(x["ratio"] for x in rep),
            "chat_ttft_ms": [med(x["ttft_ms"][t] for x in chat) for t in range(4)],
            "cold_with_state_first_answer_ms": med(x["first_answer_ms"] for x in cs),
            "cold_with_state_load_ms": med(x["load_state_ms"] for x in cs),
            "cold_without_state_first_answer_ms": med(x["first_answer_ms"] for x in cn),
        }
        s = summary[side]
        s["cold_ratio"] = s["cold_with_state_first_answer_ms"] / s["cold_without_state_first_answer_ms"]
        if side == "ours":
            s["repeat_reused_tokens"] = rep[-1]["info"][1]["n_prompt_reused"]
            s["repeat_prompt_tokens"] = rep[-1]["info"][1]["n_prompt"]
            s["chat_reused_tokens"] = [i["n_prompt_reused"] for i in chat[-1]["info"]]
            s["chat_prompt_tokens"] = [i["n_prompt"] for i in chat[-1]["info"]]
            if a.settle:
                s["chat_settle_ms"] = [med(x["info"][t]["settle_ms"] for x in chat) for t in range(4)]
                s["chat_settled_tokens"] = [i["settled_tokens"] for i in chat[-1]["info"]]
    summary["raw"] = res
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "bench_prefix.json").write_text(json.dumps(summary, indent=2))

    o, t = summary["ours"], summary["theirs"]
    print(f"\nprefix reuse, {Path(a.model).name}, n_threads {a.threads}, n_ctx {a.n_ctx}, "
          f"flash attention {'on' if a.flash_attn else 'off'}, "
          f"chat answers {'each side its own' if a.own_answers else 'scripted'}, "
          f"ours reuse_generated {'on' if a.reuse_generated else 'off'}, settle {'on' if a.settle else 'off'}, "
          f"median of {a.rounds} interleaved rounds (TTFT = wall time to the first text)\n")
    print(f"| {'measure':44} | {'finllm-edge':>12} | {'llama-cpp-python':>16} |")
    print(f"|{'-' * 46}|{'-' * 14}|{'-' * 18}|")

    def row(name: str, x: float, y: float, fmt: str = "{:.0f}") -> None:
        print(f"| {name:44} | {fmt.format(x):>12} | {fmt.format(y) if y == y else '-':>16} |")

    row(f"repeat: TTFT request 1 (ms, {o['repeat_prompt_tokens']} prompt tok)", o["repeat_ttft1_ms"],
        t["repeat_ttft1_ms"])
    row("repeat: TTFT request 2 (ms)", o["repeat_ttft2_ms"], t["repeat_ttft2_ms"])
    row("repeat: ratio request 2 / request 1", o["repeat_ratio"], t["repeat_ratio"], "{:.3f}")
    for k in range(4):
        row(f"chat: TTFT turn {k + 1} (ms; ours reused {o['chat_reused_tokens'][k]}/{o['chat_prompt_tokens'][k]})",
            o["chat_ttft_ms"][k], t["chat_ttft_ms"][k])
    if a.settle:
        for k in range(3):
            row(f"chat: settle after turn {k + 1} (ms idle; {o['chat_settled_tokens'][k]} tok)",
                o["chat_settle_ms"][k], float("nan"))
    row("cold start, no saved state: first answer (ms)", o["cold_without_state_first_answer_ms"],
        t["cold_without_state_first_answer_ms"])
    row("cold start, saved state: load + first answer (ms)", o["cold_with_state_first_answer_ms"],
        t["cold_with_state_first_answer_ms"])
    row("cold start: ratio saved state / none", o["cold_ratio"], t["cold_ratio"], "{:.3f}")
    print(f"\nours / llama-cpp-python: repeat TTFT2 {o['repeat_ttft2_ms'] / t['repeat_ttft2_ms']:.2f}x, "
          f"chat turn 4 {o['chat_ttft_ms'][3] / t['chat_ttft_ms'][3]:.2f}x, "
          f"cold with state {o['cold_with_state_first_answer_ms'] / t['cold_with_state_first_answer_ms']:.2f}x")
    print(f"load average (1/5/15 min) before {summary['loadavg_before']}, after {summary['loadavg_after']}")
    print(f"json: {a.out / 'bench_prefix.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
