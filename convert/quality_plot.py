"""The task section of quality.md and quality.png: quality against size for every artifact.

The PNG has two panels sharing the x axis (file size, MiB): top-1 agreement with the F16 merged model
(from the PPL/KLD pass) and task exact match (from task_eval), each with its 95% interval as an error bar,
one labelled point per artifact, and the seed's 98% line on the task panel (98% of the F16 merged score).
"""

from __future__ import annotations

from pathlib import Path


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _ci(ci, key) -> str:
    lo_hi = (ci or {}).get(key)
    return "" if not lo_hi else f" [{100 * lo_hi[0] + 0.0:.1f}, {100 * lo_hi[1] + 0.0:.1f}]"


def task_markdown(task: dict) -> str:
    ts = task["task_set"]
    lines = [
        f"## Finance task ({task['n_questions']} questions on {task['n_passages']} passages, "
        f"{ts.get('generator')} seed {ts.get('seed')})",
        "",
        f"Decoding: {task['decoding']}. Brackets: {task['intervals']}. Accuracy kept = exact match / exact match "
        f"of {task['reference']} (the seed claims 98%). Numeric fidelity: of the answers to number questions that "
        "hold a number, the share equal to the gold and the share present in the passage.",
        "",
        "| artifact | size MiB | exact match | accuracy kept | numeric = gold | numeric in source | "
        "number answered | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in task["artifacts"]:
        size = "-" if not r.get("file_bytes") else f"{r['file_bytes'] / 2**20:.1f}"
        lines.append(
            f"| {r['name']} | {size} | {_pct(r['exact_match'])}{_ci(r['ci95'], 'exact_match')} | "
            f"{_pct(r['accuracy_kept'])}{_ci(r['ci95'], 'accuracy_kept')} | "
            f"{_pct(r['numeric_equal_gold'])}{_ci(r['ci95'], 'numeric_equal_gold')} | "
            f"{_pct(r['numeric_in_source'])}{_ci(r['ci95'], 'numeric_in_source')} | "
            f"{_pct(r['number_answered'])}{_ci(r['ci95'], 'number_answered')} | {r.get('seconds') or '-'} |")
    g = task.get("lora_gain")
    if g:
        rel = "-" if g["relative"] is None else f"{100 * g['relative']:+.1f}%"
        lines += ["", f"What the LoRA adds on the task: base {_pct(g['base_exact_match'])}"
                  f"{_ci(g['ci95'], 'base_exact_match')} -> merged F16 {_pct(g['merged_exact_match'])}: "
                  f"{100 * g['difference']:+.1f} points{_ci(g['ci95'], 'difference')}, relative {rel}"
                  f"{_ci(g['ci95'], 'relative')} (the seed reports +27%)."]
    for n in task.get("notes", []):
        lines.append(f"- {n}")
    return "\n".join(lines) + "\n"


def plot(quality_rows: list[dict], task: dict | None, path: Path) -> None:
    """quality.png: top-1 agreement and task exact match against file size, one point per artifact."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import atomic

    panels = [("top-1 agreement with F16 (%)", [(r["name"], r["file_bytes"], r["top1_agreement"],
                                                 (r.get("ci95") or {}).get("top1_agreement")) for r in quality_rows])]
    if not quality_rows:
        panels = []
    if task:
        panels.append(("task exact match (%)", [(r["name"], r["file_bytes"], r["exact_match"],
                                                 (r.get("ci95") or {}).get("exact_match"))
                                                for r in task["artifacts"] if r.get("file_bytes")]))
    if not panels:
        raise ValueError("quality.png: nothing to plot (no quality rows and no task)")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6), squeeze=False)
    for ax, (title, pts) in zip(axes[0], panels):
        same_size: dict[int, int] = {}
        for name, size, v, ci in pts:
            if v is None:
                continue
            x, y = size / 2**20, 100 * v
            err = None if not ci else [[y - 100 * ci[0]], [100 * ci[1] - y]]
            ax.errorbar([x], [y], yerr=err, fmt="o", capsize=3)
            k = same_size[round(x)] = same_size.get(round(x), -1) + 1      # labels of equal-size files stacked
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 4 - 10 * k), fontsize=7)
        ax.set_xlabel("file size (MiB)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    if task:
        ref = next((r for r in task["artifacts"] if r["name"] == task["reference"]), None)
        if ref and ref["exact_match"]:
            axes[0][-1].axhline(98 * ref["exact_match"], ls="--", lw=1, color="grey", label="98% of F16 merged")
            axes[0][-1].legend(fontsize=7)
    fig.suptitle("Quality against size (error bars: 95% bootstrap intervals)", fontsize=11)
    fig.tight_layout()
    with atomic.atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
