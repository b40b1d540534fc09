"""``decisions.jsonl``: one JSON line per controller decision, for comparison and ``rankrl explain``.

Each line holds the step, the observation by feature name, the action (policy levels, or the rank deltas a
heuristic asked for), the policy's action probabilities (learned) or the rule's reason (heuristics), the
ranks requested, applied and clipped at the wall, memory before and after, and the eval accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

from rankrl.controllers.base import Applied, ControllerContext

DECISIONS_FILE = "decisions.jsonl"


def decision_record(ctx: ControllerContext, applied: Applied, *, controller: str,
                    memory_after: int | None = None) -> dict:
    """The log line of one decision.

    Args:
        ctx: The decision's context.
        applied: What :meth:`RankController.apply` returned.
        controller: The controller's name or spec.
        memory_after: Measured bytes after the ranks were applied, if the caller measured them; otherwise
            ``memory_after`` is the prediction (``memory_after_measured`` says which).
    """
    decision = applied.decision
    status = ctx.signals.memory
    scalars = ctx.signals.scalars
    evaluated = scalars.get("eval/count", 0.0) > 0
    return {
        "step": ctx.step,
        "controller": controller,
        "observation": {name: float(value) for name, value in ctx.features.items()},
        "action": decision.action if decision.action is not None
        else [r - b for r, b in zip(applied.requested, applied.before, strict=True)],
        "action_kind": "policy_levels" if decision.action is not None else "rank_deltas",
        "probabilities": decision.probabilities,
        "reason": decision.reason,
        "ranks_before": applied.before,
        "ranks_requested": applied.requested,
        "ranks_after": applied.ranks,
        "clipped_groups": applied.clipped,
        "frozen_before": applied.frozen_before,
        "frozen_after": applied.frozen,
        "forced_groups": applied.forced,
        "budget_trend": ctx.budget_trend,
        "memory_before": status.used if status is not None else None,
        "memory_after": memory_after if memory_after is not None else applied.predicted_used,
        "memory_after_measured": memory_after is not None,
        "budget": ctx.budget.budget if ctx.budget is not None else None,
        "eval_accuracy": scalars.get("eval/accuracy") if evaluated else None,
    }


class DecisionLog:
    """Append decision records to ``decisions.jsonl`` (a directory means the file inside it)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path / DECISIONS_FILE if path.is_dir() else path
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        """Append one record as a JSON line."""
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    @staticmethod
    def read(path: str | Path) -> list[dict]:
        """Every record of a ``decisions.jsonl`` (or of the one in a run directory)."""
        path = Path(path)
        path = path / DECISIONS_FILE if path.is_dir() else path
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
