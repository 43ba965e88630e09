"""Serving under load: `finllm-edge serve` against llama.cpp's own `llama-server`, side by side.

    flock /tmp/fe-bench.lock python benchmarks/bench_serve.py [--rounds 2 --requests 12 --max-tokens 48]

Same llama.cpp pin (llama-server is built from the pinned tree with the same CPU flags as the
library the Python binding loads: finllm_edge/native/llama_server.py), same GGUF (SmolLM2-135M
Q4_0 made with the pinned llama-quantize, as bench_runtime_overhead.py makes it), same threads,
same load, same requests (/v1/completions, stream, temperature 0, ignore_eos: every request
generates exactly --max-tokens tokens on both servers, so the work is equal).

Servers (all started once, idle while another is measured; finllm servers with --no-settle: no
prompt here repeats an answer, and settling while idle would take CPU from the server measured):
  finllm-N     finllm-edge serve --parallel N   (the core's Scheduler: N sequences per batch)
               (when this build has no finllm_edge.Scheduler: left out, and said so)
  finllm-1     finllm-edge serve --parallel 1   (one session, requests in turn)
  finllm-N-base with --baseline-lib LIB: finllm-N on another libfinllm_edge.so (an earlier build
               of the core, loaded through FINLLM_EDGE_LIB), to measure a core change side by side;
               with --baseline-src DIR: finllm-N from another source tree (a Python change)
  llama-server llama-server -np N (continuous batching), -c N * --ctx
Flash attention: --flash-attn auto (default) leaves each server at its default: on for
llama-server (-fa auto on a CPU) and finllm-N (serve's auto), off for finllm-1 (the session's
prefix reuse); on / off sets it for all.

Load points, each a bounded loopback load (--requests requests, at most --time-cap s):
  c1 c2 c4 c8     closed loop: that many clients, each sending its next request when the last ends
  p<rate>         open loop: Poisson arrivals at <rate> requests/s (--rates)
Figures per point: throughput (generated tokens / wall time), P50/P99 TTFT (request sent -> first
token received), P99 inter-token latency (gaps between streamed tokens of a request, all requests).

Method: rounds interleave the servers at every load point with a rotating order; ratios are taken
within a round (adjacent in time) and the median over rounds is reported. Targets (issue 15):
finllm-N throughput at c8 >= 2.3x its c1 (sequential) with P99 inter-token < 150 ms, and
throughput at equal P99 (the best load point whose P99 inter-token < 150 ms) >= llama-server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

P99_BOUND_MS = 150.0
SPEEDUP_TARGET = 2.3
PROMPTS = [
    "Explain how a company's operating margin is computed and what it says about the business.",
    "A bond pays a 5% coupon and trades at 95. Describe what happens to its yield.",
    "List the main items of a cash flow statement and what each one measures.",
    "What is the difference between EBITDA and net income? Give an example.",
    "Describe how interest rate rises affect bank net interest margins.",
    "Summarize the risks of holding a concentrated equity portfolio.",
    "How does a company's working capital change when inventory grows faster than sales?",
    "Explain the price to earnings ratio and its limits for comparing firms.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def q4_0_model() -> Path:
    from bench_runtime_overhead import find_tools
    from bench_runtime_overhead import q4_0_model as make

    from finllm_edge.models import default_model_path

    tools = find_tools(build=False, target="host")
    if tools.get("llama-quantize") is None:
        raise SystemExit("[serve] llama-quantize is not built: run `finllm-edge native build` or pass --model")
    return make(tools["llama-quantize"], default_model_path())


def has_scheduler() -> bool:
    try:
        from finllm_edge import Scheduler  # noqa: F401
    except ImportError:
        return False
    return True


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, model_id: str, env: dict | None = None,
                 cwd: Path | None = None) -> None:
        self.name, self.cmd, self.port, self.model_id, self.env, self.cwd = name, cmd, port, model_id, env, cwd
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_serve_{name}_{port}.log"

    def start(self, timeout: float = 180.0) -> None:
        env = {**os.environ, **self.env} if self.env else None
        self.proc = subprocess.Popen(self.cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, env=env,
                                     cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"[serve] {self.name} exited ({self.proc.returncode}); see {self.log}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise SystemExit(f"[serve] {self.name} did not come up in {timeout:.0f} s; see {self.log}")

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the server process has used so far."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def one_request(client: httpx.AsyncClient, srv: Server, prompt: str, max_tokens: int) -> dict:
    try:
        return await _one_request(client, srv, prompt, max_tokens)
    except (httpx.HTTPError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


async def _one_request(client: httpx.AsyncClient, srv: Server, prompt: str, max_tokens: int) -> dict:
    body = {"model": srv.model_id, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    stamps: list[float] = []
    n_usage = n_prompt = None
    async with client.stream("POST", srv.base + "/v1/completions", json=body) as resp:
        if resp.status_code != 200:
            return {"error": f"HTTP {resp.status_code}: {(await resp.aread())[:200]!r}"}
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("usage"):
                n_usage = ev["usage"].get("completion_tokens")
                n_prompt = ev["usage"].get("prompt_tokens")
            for ch in ev.get("choices") or []:
                if ch.get("text"):
                    stamps.append(time.perf_counter())
    t1 = time.perf_counter()
    if not stamps:
        return {"error": "no tokens streamed"}
    return {"ttft_ms": (stamps[0] - t0) * 1e3, "gaps_ms": [(b - a) * 1e3 for a, b in zip(stamps, stamps[1:])],
            "n_gen": n_usage if n_usage is not None else len(stamps), "n_prompt": n_prompt, "t0": t0, "t1": t1}


def system_preamble(n_tokens: int) -> str:
    """About n_tokens tokens of shared system text (~33 SmolLM2 tokens a rule), or ''."""
    rules = [f"Rule {i + 1}: the loan-to-value ratio of segment {i + 1} stays below {60 + i}% and its coverage "
             f"above {1 + i / 10:.1f}x." for i in range(max(0, round(n_tokens / 33)))]
    return ("You are a careful financial analyst. " + " ".join(rules) + "\n\n") if rules else ""


async def run_point(srv: Server, point: str, n_requests: int, max_tokens: int, time_cap: float, seed: int,
                    system: str = "") -> dict:
    """One bounded load point on one server. Every prompt is unique to its round, load point and
    position (a server's cache of earlier prompts never answers a whole one); `system` is a shared
    start of every prompt (--system-tokens), which servers with prefix reuse evaluate once."""
    rng = random.Random(seed)
    prompts = [f"{system}Question {seed}-{i + 1}. {PROMPTS[(i + seed) % len(PROMPTS)]}" for i in range(n_requests)]
    results: list[dict] = []
    # a fresh connection per request (no keep-alive): cpp-httplib closes idle ones, which httpx would reuse
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=0)
    cpu0 = srv.cpu_s()
    async with httpx.AsyncClient(timeout=httpx.Timeout(time_cap + 30), limits=limits) as client:
        start = time.perf_counter()
        deadline = start + time_cap
        if point.startswith("c"):
            conc = int(point[1:])
            queue = list(prompts)

            async def worker():
                while queue and time.perf_counter() < deadline:
                    results.append(await one_request(client, srv, queue.pop(0), max_tokens))

            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conc))), time_cap + 60)
        else:
            rate = float(point[1:])
            tasks = []
            for p in prompts:
                if time.perf_counter() >= deadline:
                    break
                tasks.append(asyncio.create_task(one_request(client, srv, p, max_tokens)))
                await asyncio.sleep(rng.expovariate(rate))
            results = list(await asyncio.wait_for(asyncio.gather(*tasks), time_cap + 60))
        wall = time.perf_counter() - start
    cpu = srv.cpu_s() - cpu0
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    gaps = sorted(g for r in ok for g in r["gaps_ms"])
    ttfts = sorted(r["ttft_ms"] for r in ok)
    return {"server": srv.name, "point": point, "requests": len(results), "errors": len(errors),
            "first_error": errors[0] if errors else None, "wall_s": round(wall, 3),
            "tokens": sum(r["n_gen"] for r in ok),
            "tok_s": round(sum(r["n_gen"] for r in ok) / wall, 2) if wall > 0 else 0.0,
            "prompt_tokens_mean": round(statistics.mean(r["n_prompt"] for r in ok), 1)
            if ok and all(r["n_prompt"] is not None for r in ok) else None,
            "ttft_ms_p50": round(pct(ttfts, 50), 1), "ttft_ms_p99": round(pct(ttfts, 99), 1),
            "itl_ms_p50": round(pct(gaps, 50), 1), "itl_ms_p99": round(pct(gaps, 99), 1),
            # the server's own CPU time (decode threads, HTTP, streaming) per generated token and its
            # share of the wall time in cores: what serving costs beyond the model
            "server_cpu_ms_per_token": round(1e3 * cpu / max(1, sum(r["n_gen"] for r in ok)), 2),
            "server_cpu_cores": round(cpu / wall, 2) if wall > 0 else 0.0}


def pct(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(q / 100 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def median(xs: list[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="GGUF (default: SmolLM2-135M -> Q4_0)")
    ap.add_argument("--parallel", type=int, default=8, help="slots of finllm-N and llama-server -np (default 8)")
    ap.add_argument("--concurrency", default="1,2,4,8", help="closed-loop client counts (default 1,2,4,8)")
    ap.add_argument("--rates", default="2,4", help="Poisson arrival rates in requests/s (default 2,4)")
    ap.add_argument("--requests", type=int, default=12, help="requests per load point (default 12)")
    ap.add_argument("--max-tokens", type=int, default=48, help="tokens generated per request (default 48)")
    ap.add_argument("--system-tokens", type=int, default=0,
                    help="a shared system preamble of about this many tokens before every prompt (default 0; "
                         "the issue's case: 300)")
    ap.add_argument("--ctx", type=int, default=512, help="context per slot (default 512)")
    ap.add_argument("--threads", "-t", type=int, default=2, help="threads of every server (default 2)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--time-cap", type=float, default=60.0, help="seconds per load point at most (default 60)")
    ap.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto",
                    help="every server's flash attention (default auto, each server's default: on for "
                         "llama-server and finllm-N, off for finllm-1)")
    ap.add_argument("--llama-server-flash-attn", dest="llama_fa", choices=["auto", "on", "off"], default=None,
                    help="llama-server's flash attention when it should differ from --flash-attn")
    ap.add_argument("--batch", "-b", type=int, default=512,
                    help="finllm servers' -b (prompt tokens per step; default 512). 63 keeps flash attention's "
                         "prompts on its row kernel: a shared system prompt is then reused up to its last 2 tokens")
    ap.add_argument("--baseline-lib", type=Path, default=None,
                    help="also run finllm-N on this libfinllm_edge.so (FINLLM_EDGE_LIB) as finllm-N-base: "
                         "an earlier build of the core, measured side by side with this one")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="also run finllm-N from this source tree (PYTHONPATH; e.g. `git worktree add /tmp/base REV`) "
                         "as finllm-N-base, on this tree's library unless --baseline-lib: a change to the Python "
                         "serve layer measured side by side with this one")
    ap.add_argument("--servers", default=None, help="comma list among finllm-N,finllm-1,llama-server (default all)")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    a = ap.parse_args(argv)
    if a.baseline_lib and not a.baseline_lib.is_file():
        ap.error(f"--baseline-lib {a.baseline_lib}: no such file")
    if a.baseline_src and not (a.baseline_src / "finllm_edge" / "__init__.py").is_file():
        ap.error(f"--baseline-src {a.baseline_src}: no finllm_edge package there")

    from finllm_edge.native.llama_server import existing_llama_server

    model = a.model or q4_0_model()
    n = a.parallel
    points = [f"c{c}" for c in a.concurrency.split(",") if c] + [f"p{r}" for r in a.rates.split(",") if r]
    # --no-settle: these prompts never send an answer back, and an idle server's settle would take
    # CPU from the server measured next
    py = [sys.executable, "-m", "finllm_edge.lab", "serve", str(model), "--log-level", "warning", "--no-settle",
          "-t", str(a.threads), "--model-id", "bench", "--flash-attn", a.flash_attn, "-b", str(a.batch)]
    servers: list[Server] = []
    notes: list[str] = []
    wanted = set(a.servers.split(",")) if a.servers else {"finllm-N", "finllm-1", "llama-server"}
    if "finllm-N" in wanted:
        if has_scheduler():
            p = free_port()
            servers.append(Server(f"finllm-{n}", py + ["--port", str(p), "--parallel", str(n), "-c", str(a.ctx)],
                                  p, "bench"))
            if a.baseline_lib or a.baseline_src:
                from finllm_edge.cpu_variant import library_path

                p = free_port()
                cmd = py + ["--port", str(p), "--parallel", str(n), "-c", str(a.ctx)]
                env = {"FINLLM_EDGE_LIB": str((a.baseline_lib or library_path()).resolve())}
                src = a.baseline_src.resolve() if a.baseline_src else None
                if src:  # python -m puts the working folder first on sys.path: run there
                    env["PYTHONPATH"] = str(src)
                servers.append(Server(f"finllm-{n}-base", cmd, p, "bench", env=env, cwd=src))
        else:
            notes.append("finllm-N left out: this build has no finllm_edge.Scheduler (concurrent sessions)")
    if "finllm-1" in wanted:
        p = free_port()
        servers.append(Server("finllm-1", py + ["--port", str(p), "--parallel", "1", "-c", str(a.ctx)], p, "bench"))
    if "llama-server" in wanted:
        exe = existing_llama_server()
        if exe is None:
            notes.append("llama-server left out: not built (finllm-edge native build --target llama-server)")
        else:
            p = free_port()
            servers.append(Server("llama-server", [str(exe), "-m", str(model), "--host", "127.0.0.1", "--port", str(p),
                                                   "-np", str(n), "-cb", "-c", str(n * a.ctx), "-t", str(a.threads),
                                                   "-tb", str(a.threads), "--alias", "bench", "--no-webui",
                                                   "-fa", a.llama_fa or a.flash_attn],
                                  p, "bench"))
    for note in notes:
        print(f"[serve] {note}", file=sys.stderr)
    if not servers:
        raise SystemExit("[serve] no server to measure")
    rows: list[dict] = []
    try:
        for s in servers:
            print(f"[serve] starting {s.name}: {' '.join(s.cmd)}", file=sys.stderr)
            s.start()
            asyncio.run(run_point(s, "c1", 1, 8, 60, 0))  # warm-up
        system = system_preamble(a.system_tokens)
        for rnd in range(a.rounds):
            for i, point in enumerate(points):
                k = (rnd + i) % len(servers)
                for s in servers[k:] + servers[:k]:
                    r = asyncio.run(run_point(s, point, a.requests, a.max_tokens, a.time_cap, seed=rnd * 100 + i,
                                              system=system))
                    r["round"] = rnd
                    rows.append(r)
                    print(f"[serve] round {rnd} {point:4s} {s.name:13s} {r['tok_s']:7.1f} tok/s  TTFT p50/p99 "
                          f"{r['ttft_ms_p50']:.0f}/{r['ttft_ms_p99']:.0f} ms  ITL p99 {r['itl_ms_p99']:.0f} ms  "
                          f"server CPU {r['server_cpu_ms_per_token']:.2f} ms/token ({r['server_cpu_cores']:.2f} cores)"
                          f"{'  errors ' + str(r['errors']) + ': ' + str(r['first_error']) if r['errors'] else ''}",
                          file=sys.stderr)
    finally:
        for s in servers:
            s.stop()
    summary = summarize(rows, [s.name for s in servers], points, a.rounds)
    out = {"model": str(model), "parallel": n, "threads": a.threads, "flash_attn": a.flash_attn, "batch": a.batch,
           "requests": a.requests, "max_tokens": a.max_tokens, "system_tokens": a.system_tokens,
           "ctx_per_slot": a.ctx, "rounds": a.rounds, "points": points, "notes": notes,
           "p99_bound_ms": P99_BOUND_MS, "rows": rows, "summary": summary}
    print(json.dumps(out, indent=2))
    if a.json_out:
        a.json_out.write_text(json.dumps(out, indent=2) + "\n")
    print_table(summary, [s.name for s in servers], points)
    return 0


def summarize(rows: list[dict], names: list[str], points: list[str], rounds: int) -> dict:
    def get(name, point, rnd):
        return next((r for r in rows if r["server"] == name and r["point"] == point and r["round"] == rnd), None)

    per: dict = {}
    for name in names:
        per[name] = {}
        for point in points:
            rs = [get(name, point, k) for k in range(rounds)]
            rs = [r for r in rs if r]
            per[name][point] = {f: median([r[f] for r in rs]) for f in
                                ("tok_s", "ttft_ms_p50", "ttft_ms_p99", "itl_ms_p99")}
            per[name][point]["errors"] = sum(r["errors"] for r in rs)
        c1 = "c1" if "c1" in points else None
        cmax = max((p for p in points if p.startswith("c")), key=lambda p: int(p[1:]), default=None)
        if c1 and cmax:
            ratios = [get(name, cmax, k)["tok_s"] / get(name, c1, k)["tok_s"] for k in range(rounds)
                      if get(name, cmax, k) and get(name, c1, k) and get(name, c1, k)["tok_s"] > 0]
            per[name]["speedup"] = {"point": cmax, "vs": c1, "median_ratio": median(ratios), "ratios": ratios}
        ok = [(per[name][p]["tok_s"], p) for p in points if per[name][p]["itl_ms_p99"] < P99_BOUND_MS]
        per[name]["best_within_p99"] = {"tok_s": max(ok)[0], "point": max(ok)[1]} if ok else None
    vs = {}
    if "llama-server" in names:
        for name in names:
            if name == "llama-server":
                continue
            vs[name] = {p: median([get(name, p, k)["tok_s"] / get("llama-server", p, k)["tok_s"]
                                   for k in range(rounds) if get(name, p, k) and get("llama-server", p, k)
                                   and get("llama-server", p, k)["tok_s"] > 0]) for p in points}
            a, b = per[name].get("best_within_p99"), per["llama-server"].get("best_within_p99")
            vs[name]["best_within_p99"] = (a["tok_s"] / b["tok_s"]) if a and b and b["tok_s"] > 0 else float("nan")
    return {"per_server": per, "throughput_ratio_vs_llama_server": vs}


def print_table(summary: dict, names: list[str], points: list[str]) -> None:
    per = summary["per_server"]
    print(f"\n{'server':14s} {'load':5s} {'tok/s':>8s} {'TTFT p50':>9s} {'TTFT p99':>9s} {'ITL p99':>8s}  errors")
    for name in names:
        for p in points:
            r = per[name][p]
            print(f"{name:14s} {p:5s} {r['tok_s']:8.1f} {r['ttft_ms_p50']:9.0f} {r['ttft_ms_p99']:9.0f} "
                  f"{r['itl_ms_p99']:8.0f}  {r['errors']}")
    print()
    for name in names:
        sp = per[name].get("speedup")
        if sp:
            mark = "met" if sp["median_ratio"] >= SPEEDUP_TARGET else "missed"
            print(f"{name}: throughput {sp['point']} / {sp['vs']} = {sp['median_ratio']:.2f}x "
                  f"(target >= {SPEEDUP_TARGET}x: {mark}); per round {', '.join(f'{x:.2f}' for x in sp['ratios'])}")
        b = per[name].get("best_within_p99")
        print(f"{name}: best throughput with ITL p99 < {P99_BOUND_MS:.0f} ms: "
              + (f"{b['tok_s']:.1f} tok/s at {b['point']}" if b else "none of the load points"))
    for name, row in summary["throughput_ratio_vs_llama_server"].items():
        print(f"{name} / llama-server throughput: " + ", ".join(f"{p} {row[p]:.2f}" for p in points)
              + f"; at ITL p99 < {P99_BOUND_MS:.0f} ms: {row['best_within_p99']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
