"""Whole allocations the first decision of environment v3 can choose in one action (the *plan* head).

The first allocation of a run is a joint choice: ``static-fit`` and its variants take one allocation of a
small grid (the top ``k`` groups at a uniform rank ``r``, the groups below at rank 0), and which one is
best jumps when the budget crosses a breakpoint. Per-group delta actions, one independent head per group,
can mix two such allocations near a breakpoint into a third that neither rule would take (a clone of
``static-fit:cap=0.5`` did, ``docs/results.md``). One categorical head over whole allocations cannot.

Plan 0 (:data:`NO_PLAN`) leaves the first decision to the per-group actions; the other plans exist only at
the first decision, before the first optimizer step, when no adapter has learned anything, so setting a
group to rank 0 loses nothing. Later decisions ignore the plan head.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

NO_PLAN = "none"
_PLAN = re.compile(r"top(\d+)@(\d+)")


def plan_names(num_groups: int, r_max: int, rank_step: int) -> list[str]:
    """:data:`NO_PLAN`, then ``top{k}@{r}`` for ``k = G .. 1`` groups and ``r = r_max .. rank_step`` (the
    order ``static-fit`` tries them in)."""
    if num_groups < 1 or rank_step < 1 or r_max < rank_step:
        raise ValueError(f"Plans need num_groups >= 1 and r_max >= rank_step >= 1; got {num_groups}, {r_max}, "
                         f"{rank_step}.")
    highest = r_max - r_max % rank_step
    return [NO_PLAN] + [f"top{k}@{r}" for k in range(num_groups, 0, -1) for r in range(highest, 0, -rank_step)]


def plan_ranks(name: str, num_groups: int) -> list[int] | None:
    """The allocation a plan sets (``None`` for :data:`NO_PLAN`)."""
    if name == NO_PLAN:
        return None
    match = _PLAN.fullmatch(name)
    if match is None or not 1 <= int(match.group(1)) <= num_groups:
        raise ValueError(f"{name!r} is not a plan for {num_groups} groups (expected {NO_PLAN!r} or 'top<k>@<rank>').")
    trained, rank = int(match.group(1)), int(match.group(2))
    return [0] * (num_groups - trained) + [rank] * trained


def plan_index(names: Sequence[str], ranks: Sequence[int], frozen: Sequence[bool] | None = None) -> int:
    """The index of the plan that sets exactly ``ranks`` with nothing frozen, else 0 (:data:`NO_PLAN`)."""
    if frozen is not None and any(frozen):
        return 0
    wanted = [int(r) for r in ranks]
    for index, name in enumerate(names):
        if index and plan_ranks(name, len(wanted)) == wanted:
            return index
    return 0
