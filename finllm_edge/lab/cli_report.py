"""`finllm-edge report PROFILES... -o DIR`: LatencyProfiles -> report.md + PNG charts.

Accepts any file holding LatencyProfiles (one object, a list, or {"profiles": [...]}, e.g. the
output of `finllm-edge bench`, of `fe-bench`, of qemu runs and of phones); every profile is
validated against the shared schema. Emulated profiles are marked EMULATED in the table and
hatched in the charts; estimates (from bench JSON files or `--estimate DEVICE`) are marked
ESTIMATE and carry their assumptions.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from finllm_edge.errors import FinLLMEdgeError

MEASURED, EMULATED, ESTIMATE = "measured", "EMULATED", "ESTIMATE"
COLORS = {MEASURED: "#1f77b4", EMULATED: "#9e9e9e", ESTIMATE: "#ff7f0e"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("profiles", nargs="+", type=Path, help="JSON files with LatencyProfiles")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    parser.add_argument("--estimate", action="append", default=[], metavar="DEVICE",
                        help="add roofline estimates on DEVICE for each profiled model file found locally")
    parser.add_argument("--title", default="finllm-edge latency report")


class ReportInputError(FinLLMEdgeError, ValueError):
    """An input file that is not a latency profile file."""


PROFILE_SOURCES = ("`finllm-edge run --profile-out FILE`, `finllm-edge bench -o FILE`, `finllm-edge emulate -o FILE`, "
                   "`finllm-edge device bench` (OUT/report.json) or fe-bench")


def not_a_profile_file(path: Path, data) -> str | None:
    """Name the finllm-edge files people pass by mistake, and say what to pass instead."""
    if not isinstance(data, dict) or "profiles" in data:
        return None
    if "artifacts" in data and "seed_claim" in data:
        return (f"{path} is a quality report of `finllm-edge convert` (perplexity, KLD, top-1 agreement per "
                f"artifact), not a latency profile; read it or its quality.md next to it, and pass "
                f"`finllm-edge report` the profiles written by {PROFILE_SOURCES}")
    if "artifacts" in data and "inputs" in data and "versions" in data:
        return (f"{path} is the manifest of a `finllm-edge convert` output (hashes and versions), not a latency "
                f"profile; benchmark the artifacts it lists with `finllm-edge bench MODEL -o FILE` and pass FILE")
    return None


def read_json(path: Path):
    if path.is_dir():
        raise ReportInputError(f"{path} is a folder; pass the JSON files written by {PROFILE_SOURCES}")
    raw = path.read_bytes()  # a missing or unreadable file is an OSError: the CLI reports it
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ReportInputError(f"{path} is not JSON (not UTF-8 text: {exc.reason} at byte {exc.start}); pass the "
                               f"LatencyProfile JSON written by {PROFILE_SOURCES}") from exc
    except ValueError as exc:
        raise ReportInputError(f"{path} is not JSON ({exc}); pass the LatencyProfile JSON written by "
                               f"{PROFILE_SOURCES}") from exc


def load_inputs(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    from finllm_edge.profile import validate_profile

    profiles, estimates = [], []
    for path in paths:
        data = read_json(path)
        mistake = not_a_profile_file(path, data)
        if mistake:
            raise ReportInputError(mistake)
        if isinstance(data, dict) and "profiles" in data:
            items = data["profiles"]
            estimates.extend(e for e in data.get("estimates", []) if e.get("kind") == "estimate")
        else:
            items = data if isinstance(data, list) else [data]
        for i, p in enumerate(items):
            try:
                profiles.append(validate_profile(p))
            except ValueError as exc:
                raise ReportInputError(f"{path} profile {i} is not a valid LatencyProfile: {exc}") from exc
    return profiles, estimates


def label(i: int, p: dict) -> str:
    tag = f" [{EMULATED}]" if p.get("emulated") else ""
    variant = f" {p['variant']}" if p.get("variant") else ""
    return f"{i}. {Path(p['model_path']).name} · {p['tool']}{variant} · {p['n_threads']}t{tag}"


def estimate_label(e: dict) -> str:
    return f"{ESTIMATE}: {Path(e['model_path']).name} on {e['device']} · {e['n_threads']}t"


def _bars(ax, names, values, kinds, title, unit):
    import numpy as np

    y = np.arange(len(names))
    for yi, v, k in zip(y, values, kinds):
        ax.barh(yi, v, color=COLORS[k], hatch="//" if k != MEASURED else None, edgecolor="black", linewidth=0.5)
        ax.text(v, yi, f" {v:,.1f}", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(unit)
    if values and min(values) > 0 and max(values) / min(values) > 50:
        ax.set_xscale("log")
        ax.set_xlabel(f"{unit} (log scale)")
    ax.margins(x=0.25)


def plot_token_latency(profiles: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=110)
    ymax = ymin = None
    for i, p in enumerate(profiles, 1):
        ms = p["token_ms"]
        if not ms:
            continue
        xs = list(range(2, len(ms) + 2))
        ax.plot(xs, ms, linestyle="--" if p.get("emulated") else "-", linewidth=1.2,
                label=f"{label(i, p)} (p50 {p['token_ms_p50']:.1f} ms)")
        ymax = max(ymax or 0, max(ms))
        ymin = min(ymin or float("inf"), min(ms))
    ax.set_xlabel("generated token #  (token 1 is the TTFT, not shown)")
    ax.set_ylabel("latency per token (ms)")
    if ymax and ymin and ymin > 0 and ymax / ymin > 50:
        ax.set_yscale("log")
        ax.set_ylabel("latency per token (ms, log scale)")
    ax.set_title("Decode latency over the generation (last repetition of each profile)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.15), ncol=1, frameon=False)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def plot_compare(profiles: list[dict], estimates: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = [label(i, p) for i, p in enumerate(profiles, 1)] + [estimate_label(e) for e in estimates]
    kinds = [EMULATED if p.get("emulated") else MEASURED for p in profiles] + [ESTIMATE] * len(estimates)
    ttft = [p["ttft_ms"] for p in profiles] + [e["ttft_ms"] for e in estimates]
    tg = [p["decode_tok_s"] for p in profiles] + [e["decode_tok_s"] for e in estimates]
    h = 1.2 + 0.45 * len(names)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, h), dpi=110, sharey=True)
    _bars(a1, names, ttft, kinds, "Time to first token (lower is better)", "ms")
    _bars(a2, names, tg, kinds, "Decode throughput (higher is better)", "tokens / s")
    a1.invert_yaxis()  # shared y axis: invert once, first profile on top
    present = [k for k in (MEASURED, EMULATED, ESTIMATE) if k in kinds]
    legend = {MEASURED: "measured", EMULATED: "EMULATED (qemu: never device speed)",
              ESTIMATE: "ESTIMATE (roofline model, not measured)"}
    fig.legend(handles=[Patch(facecolor=COLORS[k], hatch="//" if k != MEASURED else None, edgecolor="black",
                              label=legend[k]) for k in present], loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, -0.02 - 0.25 / h))
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def write_markdown(profiles: list[dict], estimates: list[dict], out: Path, title: str) -> Path:
    lines = [f"# {title}", "", f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} "
             f"from {len(profiles)} profile(s).", ""]
    if any(p.get("emulated") for p in profiles):
        lines += ["> **EMULATED** rows ran under qemu: they check correctness and relative cost only. "
                  "Never quote them as device speed.", ""]
    lines += ["| # | model | tool | device | thr | TTFT ms | prefill tok/s (min–max) | decode tok/s (min–max) "
              "| p50 / p90 / p99 ms | e2e ms | load ms | peak RSS MB | bpw | reps |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, p in enumerate(profiles, 1):
        tag = " **EMULATED**" if p.get("emulated") else ""
        dev = p["device"]["cpu_model"] + (f" ({p['variant']})" if p.get("variant") else "")
        lines.append(
            f"| {i} | {Path(p['model_path']).name}<br>`{p['model_type']}` | {p['tool']}{tag} | {dev} | "
            f"{p['n_threads']} | {p['ttft_ms']:.1f} | {p['prefill_tok_s']:.1f} ({p['prefill_tok_s_min']:.1f}–"
            f"{p['prefill_tok_s_max']:.1f}) | {p['decode_tok_s']:.1f} ({p['decode_tok_s_min']:.1f}–"
            f"{p['decode_tok_s_max']:.1f}) | {p['token_ms_p50']:.2f} / {p['token_ms_p90']:.2f} / "
            f"{p['token_ms_p99']:.2f} | {p['e2e_ms']:.0f} | {p['load_ms']:.0f} | {p['peak_rss_mb']:.0f} | "
            f"{p['bits_per_weight']:.2f} | {p['repetitions']} (+{p['warmup']} warm-up) |")
    lines += ["", "![token latency](token_latency.png)", "", "![TTFT and decode throughput](compare.png)", ""]
    if estimates:
        lines += ["## Estimates (roofline model — NOT measurements)", "",
                  "| device | model | thr | TTFT ms | prefill tok/s | decode tok/s | decode bound |",
                  "|---|---|---|---|---|---|---|"]
        for e in estimates:
            lines.append(f"| {e['device_name']} | {Path(e['model_path']).name} | {e['n_threads']} | "
                         f"{e['ttft_ms']:.1f} | {e['prefill_tok_s']:.1f} | {e['decode_tok_s']:.1f} | "
                         f"{e['decode_bound']} |")
        seen = set()
        for e in estimates:
            if e["device"] in seen:
                continue
            seen.add(e["device"])
            lines += ["", f"Assumptions for {e['device_name']}:", ""] + [f"- {a}" for a in e["assumptions"]]
        lines.append("")
    lines += ["## Provenance", "", "| # | tool version | llama.cpp | model sha256 | n_prompt / n_gen / n_ctx | "
              "cores used | created |", "|---|---|---|---|---|---|---|"]
    for i, p in enumerate(profiles, 1):
        lines.append(f"| {i} | {p['tool']} {p['tool_version']} | {p['llama_cpp_version']} | "
                     f"`{p['model_sha256'][:16]}…` | {p['n_prompt']} / {p['n_gen']} / {p['n_ctx']} | "
                     f"{','.join(map(str, p['device']['cores_used']))} | {p['created_at']} |")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_report(paths: list[Path], out: Path, devices: list[str] = (), title: str = "finllm-edge latency report"
                 ) -> dict[str, Path]:
    profiles, estimates = load_inputs(paths)
    if not profiles:
        raise ReportInputError(f"no profiles in {', '.join(map(str, paths))}; pass the files written by "
                               f"{PROFILE_SOURCES}")
    if devices:
        from .estimate import estimate, load_device, model_stats

        specs = [load_device(d) for d in devices]
        for model in dict.fromkeys(p["model_path"] for p in profiles):
            if not Path(model).is_file():
                print(f"[report] {model} not found here; no estimate for it", file=sys.stderr)
                continue
            ref = next(p for p in profiles if p["model_path"] == model)
            stats = model_stats(model)
            estimates += [estimate(stats, d, ref["n_prompt"], max(1, ref["n_gen"])).to_dict() for d in specs]
    out.mkdir(parents=True, exist_ok=True)
    plot_token_latency(profiles, out / "token_latency.png")
    plot_compare(profiles, estimates, out / "compare.png")
    md = write_markdown(profiles, estimates, out, title)
    return {"markdown": md, "token_latency": out / "token_latency.png", "compare": out / "compare.png"}


def main(args: argparse.Namespace) -> int:
    files = build_report(args.profiles, args.out, args.estimate, args.title)
    for kind, path in files.items():
        print(f"[report] {kind}: {path}")
    return 0
