"""Rule controllers as teachers: a heuristic drives :class:`~rankrl.env.LoRARankEnv` through its own actions.

At each environment step the teacher builds the controller's :class:`~rankrl.controllers.ControllerContext`
from the environment's state with :meth:`ControllerContext.build`, the function deployment
(:class:`rankrl.deploy.RankControl`) uses, so its ``observation`` is the environment's observation. The
controller decides (``decide``, not ``apply``: the environment puts every action through the same memory
wall), and its requested allocation is mapped to the nearest action of the environment's grid, group by
group (:func:`nearest_action`). The environment moves a rank at most ``(levels-1)/2 * rank_step`` per
decision, so a controller that asks for a larger jump gets there over several decisions; it asks again at
each one. At the first decision, an allocation that is one of the environment's plans
(:mod:`rankrl.env.plans`: the top ``k`` groups at rank ``r``, as ``static-fit`` chooses) is taken by the
plan head in one action, with every group holding.
"""

from __future__ import annotations

import difflib

import numpy as np

from rankrl.controllers import (
    CONTROLLERS,
    ControllerContext,
    RankController,
    make_controller,
    prepare_controller,
)
from rankrl.env import LoRARankEnv
from rankrl.env.lora_rank_env import FREEZE, THAW
from rankrl.env.plans import plan_index

TEACHERS: list[str] = [name for name in CONTROLLERS if name != "learned"]
"""Controller names a teacher can be (with their options, e.g. ``importance:target_rank=2``)."""


class TeacherError(ValueError):
    """A teacher spec that is not a rule controller (unknown, malformed, or a learned policy)."""


def check_teacher(spec: str) -> str:
    """Return the normalised spec of a valid teacher, or raise :class:`TeacherError` naming the known ones."""
    name = spec.strip().partition(":")[0].strip().lower()
    known = f"Known teachers: {', '.join(TEACHERS)} (options as NAME:key=value)."
    if name == "learned":
        raise TeacherError(f"Teacher {spec!r} is a learned policy; a teacher is a rule controller. {known} "
                           "To start from a trained policy, use --init-policy.")
    if name not in TEACHERS:
        close = difflib.get_close_matches(name, TEACHERS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise TeacherError(f"Unknown teacher {spec!r}.{hint} {known}")
    try:
        make_controller(spec)
    except ValueError as err:
        raise TeacherError(f"Teacher {spec!r}: {err} {known}") from None
    return spec.strip()


def nearest_action(actions: list[str], deltas: np.ndarray, r_max: int, ranks: list[int], frozen: list[bool],
                   target_ranks: list[int], target_frozen: list[bool] | None) -> np.ndarray:
    """The environment action closest to a requested allocation, one index per group.

    Per group: a requested freeze of a live training group is ``freeze``; a requested thaw of a frozen group
    that keeps rank is ``thaw``; otherwise the rank delta whose result (clipped into ``[0, r_max]``) is
    nearest the target, ties to the smaller change (holding wins a tie).

    Args:
        actions: The environment's action names (:func:`rankrl.env.lora_rank_env.action_names`).
        deltas: The rank change of each delta action (the first ``len(deltas)`` names).
        r_max: Largest rank of a group.
        ranks, frozen: The current allocation.
        target_ranks, target_frozen: The requested one (``target_frozen`` ``None``: as now).
    """
    wanted = list(frozen) if target_frozen is None else [bool(f) for f in target_frozen]
    freeze, thaw = actions.index(FREEZE), actions.index(THAW)
    action = []
    for rank, is_frozen, target, want in zip(ranks, frozen, target_ranks, wanted, strict=True):
        target = min(max(int(target), 0), r_max)
        if want and not is_frozen and rank > 0 and target > 0:
            action.append(freeze)
        elif is_frozen and not want and target > 0:
            action.append(thaw)
        else:
            landed = np.clip(rank + deltas, 0, r_max)
            action.append(int(min(range(len(deltas)), key=lambda i: (abs(landed[i] - target), abs(deltas[i])))))
    return np.asarray(action, dtype=np.int64)


class Teacher:
    """A rule controller acting in a :class:`LoRARankEnv`; a fresh controller for every episode.

    Args:
        spec: A controller spec (:data:`TEACHERS`, options as ``NAME:key=value``).

    Raises:
        TeacherError: ``spec`` is unknown, malformed or ``learned``.
    """

    def __init__(self, spec: str) -> None:
        self.spec = check_teacher(spec)
        self.controller: RankController | None = None

    def context(self, env: LoRARankEnv) -> ControllerContext:
        """The controller's context at the environment's current decision (built as deployment builds it)."""
        if env.session is None or env.signals is None:
            raise RuntimeError("Reset the environment before asking the teacher.")
        config = env.config
        return ControllerContext.build(env.signals, step=env.session.step, total_steps=env.total_steps,
                                       r_max=config.r_max, rank_step=config.rank_step, last_change=env.last_change,
                                       budget=env.budget, budget_trend=env.budget_trend)

    def start(self, env: LoRARankEnv) -> None:
        """A fresh controller for the episode just reset, checked against the run as deployment checks it."""
        config = env.config
        self.controller = make_controller(self.spec)
        prepare_controller(self.controller, group_ranks=env.session.rl.group_ranks, r_max=config.r_max,
                           rank_step=config.rank_step, split_by_kind=config.split_by_kind, budget=env.budget,
                           total_steps=env.total_steps)

    def action(self, env: LoRARankEnv) -> np.ndarray:
        """The teacher's action at the environment's current decision (a new controller at an episode's first):
        one index per group, then the plan."""
        ctx = self.context(env)
        if self.controller is None or ctx.step == 0:
            self.start(env)
        decision = self.controller.decide(ctx)
        plan = plan_index(env.plans, decision.target_ranks, decision.frozen) if ctx.step == 0 else 0
        if plan:
            return np.asarray([*env.hold[:-1], plan], dtype=np.int64)
        per_group = nearest_action(env.actions, env.deltas, env.config.r_max, ctx.group_ranks,
                                   ctx.frozen or [False] * ctx.num_groups, decision.target_ranks, decision.frozen)
        return np.asarray([*per_group, 0], dtype=np.int64)

    def __repr__(self) -> str:
        return f"Teacher({self.spec!r})"
