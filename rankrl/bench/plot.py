"""``pareto.png``: accuracy against measured peak memory, one panel per task.

Fixed ranks are drawn as a connected line (the fixed-rank front; with a learning-rate sweep, the best
learning rate of each rank, the others as faint points); every other arm is one marker with its seed
spread as error bars, and a hollow twin at its mean memory over the run when that is below its peak (an
arm that frees memory after starting at a fixed rank's); budgets are dashed vertical lines.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rankrl.bench.config import TaskSpec  # noqa: E402
from rankrl.bench.plan import FIXED  # noqa: E402
from rankrl.bench.stats import ArmSummary, summarize  # noqa: E402

PARETO_FILE = "pareto.png"
_MARKERS = "osD^v<>pP*Xh"


def plot_pareto(path: str | Path, tasks: list[TaskSpec], rows: list[dict], budgets: list[float],
                scope: str) -> Path:
    """Draw ``pareto.png`` from the rows so far and return its path."""
    path = Path(path)
    summaries = summarize(rows)
    cols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, 4.2 * nrows), squeeze=False)
    others = sorted({s.arm for s in summaries if s.kind != FIXED})
    styles = {arm: (_MARKERS[i % len(_MARKERS)], f"C{(i + 1) % 10}") for i, arm in enumerate(others)}
    for ax, task in zip(axes.flat, tasks, strict=False):
        _panel(ax, [s for s in summaries if s.task == task.name], styles, budgets)
        ax.set_title(task.name)
        ax.set_xlabel(f"memory, {scope} (MiB): peak, hollow = mean over the run")
        ax.set_ylabel("eval accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    handles, labels = [], []
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.tight_layout()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _panel(ax, summaries: list[ArmSummary], styles: dict, budgets: list[float]) -> None:
    fixed = [s for s in summaries if s.kind == FIXED]
    best: dict[int, ArmSummary] = {}
    for s in fixed:
        if s.rank not in best or s.accuracy > best[s.rank].accuracy:
            best[s.rank] = s
    front = sorted(best.values(), key=lambda s: s.memory)
    if front:
        ax.errorbar([s.memory for s in front], [s.accuracy for s in front],
                    yerr=[s.stats["accuracy"].std for s in front], color="C0", marker="o", capsize=3,
                    label="fixed rank")
        for s in front:
            ax.annotate(f"r{s.rank}", (s.memory, s.accuracy), textcoords="offset points", xytext=(4, -10),
                        fontsize=8, color="C0")
    rest = [s for s in fixed if best.get(s.rank) is not s]
    if rest:
        ax.scatter([s.memory for s in rest], [s.accuracy for s in rest], color="C0", alpha=0.3, s=14,
                   label="fixed rank, other lr")
    for s in summaries:
        if s.kind == FIXED:
            continue
        marker, color = styles[s.arm]
        ax.errorbar([s.memory], [s.accuracy], xerr=[s.stats["peak_memory_mib"].std],
                    yerr=[s.stats["accuracy"].std], marker=marker, color=color, linestyle="none", capsize=3,
                    markersize=8, label=s.arm)
        mean = s.stats.get("mean_memory_mib")
        if mean is not None and mean.mean < s.memory - 1e-6:
            ax.plot([mean.mean, s.memory], [s.accuracy, s.accuracy], color=color, linewidth=1, alpha=0.6)
            ax.scatter([mean.mean], [s.accuracy], marker=marker, s=64, facecolors="none", edgecolors=color,
                       label=f"{s.arm}, mean memory")
    for i, budget in enumerate(budgets):
        ax.axvline(budget, color="gray", linestyle="--", linewidth=1, label="budget" if i == 0 else None)
