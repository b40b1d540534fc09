"""Checks made before training starts, so that bad input fails with one clear error and no wasted steps."""

from __future__ import annotations

from rankrl.budget import MemoryBudget, check_budget_trainable
from rankrl.controllers.base import RankController


def prepare_controller(controller: RankController, *, group_ranks: list[int], r_max: int, rank_step: int,
                       split_by_kind: bool = False, budget: MemoryBudget | None = None,
                       total_steps: int | None = None) -> int | None:
    """Every check that can be made before training: run settings, the controller against the run, budget.

    Args:
        controller: The controller to deploy.
        group_ranks: Group ranks at the start of the run.
        r_max: Largest rank of a group.
        rank_step: Rank granularity.
        split_by_kind: Whether groups alternate attention (even) and MLP (odd).
        budget: The memory budget (read with a batch), or ``None`` for an unbounded run.
        total_steps: Planned optimizer steps, or ``None`` when unknown.

    Returns:
        Predicted bytes of the smallest configuration the controller can train in (``None`` without budget).

    Raises:
        ValueError: bad settings, a controller that needs a budget or a schedule it lacks, a controller that
            does not fit the run (e.g. :class:`~rankrl.env.ObservationMismatchError`), or
            :class:`BudgetTooSmallError`.
    """
    if r_max < 1 or rank_step < 1:
        raise ValueError(f"r_max and rank_step must be >= 1, got r_max={r_max}, rank_step={rank_step}.")
    if not group_ranks:
        raise ValueError("The run has no layer groups.")
    if total_steps is not None and total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    if controller.requires_budget and budget is None:
        raise ValueError(f"Controller '{controller.name}' needs a memory budget; set one (e.g. a budget in MiB).")
    if controller.requires_total_steps and total_steps is None:
        raise ValueError(f"Controller '{controller.name}' follows a schedule and needs the planned number of "
                         "training steps (total_steps / max_steps).")
    controller.bind(num_groups=len(group_ranks), split_by_kind=split_by_kind, r_max=r_max, rank_step=rank_step,
                    total_steps=total_steps)
    if budget is None:
        return None
    # The wall can take any controller down to one live group (dropping or freezing the rest), so the run is
    # feasible when the controller's own smallest configuration or that one fits.
    candidates = controller.minimum_ranks(list(group_ranks), rank_step)
    candidates += RankController.minimum_ranks(controller, list(group_ranks), rank_step)
    return check_budget_trainable(budget, candidates, f"controller '{controller.name}'")
