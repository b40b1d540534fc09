"""The memory budget, in one place.

* :mod:`.meter`: :class:`MemoryBudget`, measured memory against the budget and what each move would cost
  (rank steps, rank 0, freeze, thaw);
* :mod:`.wall`: the one rule every controller and the environment meet (:func:`clip_to_budget`,
  :func:`fit_to_wall`);
* :mod:`.schedule`: budgets that move: :class:`BudgetTrace` (shapes and CSV files) and :class:`LiveBudget`;
* :mod:`.preflight`: :func:`check_budget_trainable`, whether a budget is reachable at all.
"""

from rankrl.budget.meter import MemoryBudget, MemoryStatus
from rankrl.budget.preflight import BudgetTooSmallError, check_budget_trainable
from rankrl.budget.schedule import TRACE_KINDS, BudgetTrace, BudgetTraceError, LiveBudget
from rankrl.budget.wall import WallError, clip_to_budget, fit_to_wall

__all__ = [
    "TRACE_KINDS",
    "BudgetTooSmallError",
    "BudgetTrace",
    "BudgetTraceError",
    "LiveBudget",
    "MemoryBudget",
    "MemoryStatus",
    "WallError",
    "check_budget_trainable",
    "clip_to_budget",
    "fit_to_wall",
]
