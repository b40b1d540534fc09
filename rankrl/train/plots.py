"""Learning-curve PNG of a training run: episode returns (monitor) and held-out evaluations, paired with the rules."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def plot_learning_curve(run_dir: str | Path) -> Path | None:
    """Draw ``learning_curve.png`` from ``monitor/*.csv`` and ``evaluations.jsonl``; ``None`` if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    episodes = []
    for path in sorted((run_dir / "monitor").glob("*.csv")):
        with path.open() as handle:
            header = next(handle, "#{}")  # SB3's JSON header line: t_start orders the legs of a resumed run
            try:
                start = float(json.loads(header.lstrip("#")).get("t_start", 0.0))
            except (ValueError, AttributeError):
                start = 0.0
            for row in csv.DictReader(handle):
                try:
                    episodes.append((start + float(row["t"]), float(row["r"])))
                except (KeyError, TypeError, ValueError):  # a line cut by a kill
                    continue
    from rankrl.train.callbacks import read_evaluations

    evaluations = [e for e in read_evaluations(run_dir) if "fixed_return" in e and "timesteps" in e]
    if not episodes and not evaluations:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if episodes:
        episodes.sort()
        returns = [r for _, r in episodes]
        window = max(1, len(returns) // 20)
        smooth = [sum(returns[max(0, i - window + 1): i + 1]) / len(returns[max(0, i - window + 1): i + 1])
                  for i in range(len(returns))]
        axes[0].plot(range(1, len(returns) + 1), returns, ".", alpha=0.3, label="episode return")
        axes[0].plot(range(1, len(returns) + 1), smooth, "-", label=f"moving mean ({window})")
        axes[0].set_xlabel("training episode")
        axes[0].set_ylabel("return" if not _relative(run_dir) else "return minus the teacher's (same episode)")
        axes[0].legend()
        axes[0].set_title("Training episodes")
    if evaluations:
        steps = [e["timesteps"] for e in evaluations]
        names = list(evaluations[-1].get("paired", {}))
        if names:  # paired differences on the same held-out episodes, with their intervals
            for name in names:
                rows = [e["paired"][name]["return"] for e in evaluations if name in e.get("paired", {})]
                at = [e["timesteps"] for e in evaluations if name in e.get("paired", {})]
                errors = [r["half_width"] or 0.0 for r in rows]
                axes[1].errorbar(at, [r["mean"] for r in rows], yerr=errors, fmt="o-", capsize=3,
                                 label=f"policy - {name}")
            axes[1].axhline(0.0, color="grey", lw=0.8)
            axes[1].set_ylabel("paired return difference (mean +- 2 se)")
            axes[1].set_title("Held-out episodes: policy minus each rule")
        else:
            axes[1].plot(steps, [e["policy_return"] for e in evaluations], "o-", label="policy (held-out seeds)")
            axes[1].plot(steps, [e["fixed_return"] for e in evaluations], "s--", label="fixed rank baseline")
            axes[1].set_ylabel("mean return")
            axes[1].set_title("Evaluation against fixed rank")
        axes[1].set_xlabel("environment steps")
        axes[1].legend()
    fig.tight_layout()
    path = run_dir / "learning_curve.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _relative(run_dir: Path) -> bool:
    """Whether the run's training rewards are relative to a teacher (``config.json``'s ``replay``)."""
    try:
        replay = json.loads((run_dir / "config.json").read_text()).get("replay")
    except (OSError, ValueError):
        return False
    return bool(replay and replay.get("relative_reward"))
