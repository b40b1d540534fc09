"""The memory budget as a hard wall: clip requested group ranks to what the measured budget allows.

Shared by the environment and every controller, so that a learned policy and a heuristic meet the same
wall. Shrinks always apply (they free memory); growths are applied group by group, most important first,
each as large as still fits (in ``rank_step`` decrements), in the AMC/HAQ style of hard constraints.
"""

from __future__ import annotations

from rankrl.signals import MemoryBudget


def clip_to_budget(budget: MemoryBudget, current: list[int], requested: list[int], rank_step: int,
                   priority: list[float] | None = None) -> tuple[list[int], list[int]]:
    """Largest allocation towards ``requested`` whose predicted memory fits the budget.

    Args:
        budget: The run's memory budget (its prediction is measured, see :class:`MemoryBudget`).
        current: Group ranks now.
        requested: Group ranks asked for.
        rank_step: Granularity in which a growth is cut back.
        priority: Higher first when growths compete for headroom (e.g. importance shares); ties and
            ``None`` go by group index.

    Returns:
        ``(ranks, clipped_groups)``: the allocation to apply and the groups whose growth was cut.
    """
    if len(current) != len(requested):
        raise ValueError(f"Expected {len(current)} requested group ranks, got {len(requested)}.")
    priority = priority or [0.0] * len(current)
    ranks = [min(c, r) for c, r in zip(current, requested, strict=True)]
    clipped = []
    for g in sorted(range(len(ranks)), key=lambda g: (-priority[g], g)):
        target = requested[g]
        while target > ranks[g]:
            trial = ranks.copy()
            trial[g] = target
            if budget.would_fit(trial):
                ranks[g] = target
                break
            target = max(ranks[g], target - rank_step)
        if ranks[g] < requested[g]:
            clipped.append(g)
    return ranks, sorted(clipped)
