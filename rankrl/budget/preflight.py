"""The budget check made before training starts: is the budget reachable at all?"""

from __future__ import annotations

from rankrl.budget.meter import MemoryBudget

MIB = 1024 * 1024


class BudgetTooSmallError(ValueError):
    """The memory budget is below the smallest configuration the controller can train in."""


def check_budget_trainable(budget: MemoryBudget, candidates: list[list[int]],
                           controller: str = "the controller") -> int:
    """Raise :class:`BudgetTooSmallError` unless the cheapest candidate configuration fits the budget.

    Call it after ``budget.read(optimizer, batch)`` with a training batch, so that activations (and the
    activations freed or added by groups crossing rank 0) are measured rather than derived.

    Args:
        budget: The run's budget.
        candidates: Group-rank configurations, e.g. from :meth:`RankController.minimum_ranks`.
        controller: Name used in the message.

    Returns:
        Predicted bytes of the cheapest candidate.
    """
    if not candidates:
        raise ValueError("No candidate configurations to check.")
    costs = [(budget.predict_used(ranks), ranks) for ranks in candidates]
    used, ranks = min(costs, key=lambda item: item[0])
    if used > budget.budget:
        raise BudgetTooSmallError(
            f"The memory budget ({budget.budget / MIB:.2f} MiB, scope {budget.scope}) is below the smallest "
            f"configuration {controller} can train in: group ranks {ranks} need {used / MIB:.2f} MiB. "
            f"Raise the budget to at least {used / MIB:.2f} MiB"
            + (" or choose a lower rank." if len(candidates) == 1 else ".")
        )
    return used
