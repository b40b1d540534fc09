"""Rank controllers: the learned policy and the heuristics, behind one interface and one memory wall.

* :mod:`.base`: :class:`ControllerContext` (the environment's named observation and the signals),
  :class:`Decision`, :class:`RankController` (``decide`` the rule, ``apply`` the wall), :class:`Applied`;
* :mod:`.preflight`: :func:`prepare_controller`, every check before training (incl. the budget);
* :mod:`.static`: ``fixed`` and ``layerwise``; :mod:`.importance`: ``importance`` (AdaLoRA);
  :mod:`.complexity`: ``complexity``; :mod:`.variance`: ``variance``; :mod:`.greedy`: ``greedy-memory``;
  :mod:`.learned`: ``learned`` (an SB3 policy);
* :mod:`.registry`: :func:`make_controller` from a spec string; :mod:`.log`: ``decisions.jsonl``.
"""

from rankrl.budget import BudgetTooSmallError, WallError, check_budget_trainable
from rankrl.controllers.base import Applied, ControllerContext, Decision, RankController
from rankrl.controllers.complexity import ComplexityController
from rankrl.controllers.greedy import GreedyMemoryController
from rankrl.controllers.importance import ImportanceController
from rankrl.controllers.learned import LearnedController
from rankrl.controllers.log import DECISIONS_FILE, DecisionLog, decision_record
from rankrl.controllers.preflight import prepare_controller
from rankrl.controllers.registry import CONTROLLERS, make_controller
from rankrl.controllers.static import FixedController, LayerwiseController
from rankrl.controllers.variance import VarianceController

__all__ = [
    "CONTROLLERS",
    "DECISIONS_FILE",
    "Applied",
    "BudgetTooSmallError",
    "ComplexityController",
    "ControllerContext",
    "Decision",
    "DecisionLog",
    "FixedController",
    "GreedyMemoryController",
    "ImportanceController",
    "LayerwiseController",
    "LearnedController",
    "RankController",
    "VarianceController",
    "WallError",
    "check_budget_trainable",
    "decision_record",
    "make_controller",
    "prepare_controller",
]
