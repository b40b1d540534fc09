"""``evaluations.md``: the learning curve of a training run as a table, one row per evaluation point.

Each row is the policy on the held-out episodes and its paired differences with every rule evaluated on the
same episodes (``evaluations.jsonl``, written by :class:`rankrl.train.callbacks.BaselineEvalCallback`).
"""

from __future__ import annotations

from pathlib import Path

from rankrl.bench.stats import BETTER, WORSE
from rankrl.runs import atomic_write_text
from rankrl.train.callbacks import read_evaluations


def _difference(paired: dict | None, metric: str) -> str:
    if not paired:
        return ""
    value = paired[metric]
    width = value.get("half_width")
    interval = f" ± {width:.3f}" if width is not None else ""
    mark = {BETTER: " ▲", WORSE: " ▼"}.get(value.get("verdict", ""), "")
    return f"{value['mean']:+.3f}{interval}{mark}"


def evaluation_table(run_dir: str | Path) -> str:
    """The Markdown table of a run's evaluations (empty string when there are none)."""
    evaluations = read_evaluations(Path(run_dir))
    if not evaluations:
        return ""
    names = list(evaluations[-1].get("paired", {}))
    head = ["steps", "return", "accuracy", "memory / budget"]
    head += [f"{metric} − {name}" for name in names for metric in ("return", "accuracy")]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for record in evaluations:
        nan = float("nan")  # a record of another rankrl may lack a figure
        cells = [str(record.get("timesteps", "?")), f"{record.get('policy_return', nan):.4f}",
                 f"{record.get('policy_accuracy', nan):.3f}", f"{record.get('policy_used_frac', nan):.2f}"]
        for name in names:
            paired = record.get("paired", {}).get(name)
            cells += [_difference(paired, "return"), _difference(paired, "accuracy")]
        lines.append("| " + " | ".join(cells) + " |")
    episodes = len(evaluations[-1].get("episodes", []))
    references = ", ".join(f"`{n}` {evaluations[-1]['paired'][n]['reference_return']:.4f}" for n in names)
    note = (f"Held-out episodes per point: {episodes}. Differences are paired on the same episodes, "
            "mean ± 2 sd/√n; ▲/▼ mark an interval that leaves out 0, anything else is a tie."
            + (f" Reference returns: {references}." if references else ""))
    return "\n".join(lines) + "\n\n" + note + "\n"


def write_evaluation_table(run_dir: str | Path) -> Path | None:
    """Write ``evaluations.md`` in ``run_dir``; ``None`` when the run has no evaluation."""
    table = evaluation_table(run_dir)
    if not table:
        return None
    path = Path(run_dir) / "evaluations.md"
    atomic_write_text(path, "# Held-out evaluations during training\n\n" + table)
    return path
