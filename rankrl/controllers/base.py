"""The controller interface: what a rank controller sees, what it decides, and the memory wall it meets.

A controller sees the same named observation the environment builds (:class:`ControllerContext`) and returns
target ranks and, optionally, frozen flags per group (:class:`Decision`). :meth:`RankController.apply` is the
single place where every controller's targets are clipped into ``[0, r_max]`` and through the memory wall
(:mod:`rankrl.budget.wall`), so a learned policy and a heuristic are compared on equal terms. Applying the
result (``RankedLoRA.set_group_ranks``, ``freeze``, ``thaw``) is the caller's job; a controller never
changes the model.

One decision of a deployment::

    signals = reader.read()
    ctx = ControllerContext.build(signals, step=step, total_steps=T, r_max=r_max, rank_step=s,
                                  last_change=last.last_change if last else None, budget=reader.budget)
    last = controller.apply(ctx)
    session.set_group_ranks(last.ranks)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from rankrl.budget import MemoryBudget, WallError, clip_to_budget, fit_to_wall
from rankrl.env.observation import ObservationLayout
from rankrl.signals import Signals

MIB = 1024 * 1024
__all__ = ["MIB", "Applied", "ControllerContext", "Decision", "RankController", "WallError"]


@dataclass
class ControllerContext:
    """Everything a controller sees at one decision.

    Attributes:
        step: Optimizer steps taken so far.
        total_steps: Planned optimizer steps of the run, or ``None`` when unknown.
        group_ranks: Current rank of each group.
        r_max: Largest rank of a group.
        rank_step: Rank granularity of the run.
        signals: The signal reading of this decision.
        features: The environment's named observation (:meth:`ObservationLayout.build`).
        observation: The same as the environment's observation array (:meth:`ObservationLayout.vector`).
        budget: The memory budget (the hard wall), or ``None`` for an unbounded run.
        frozen: Per group, whether it is frozen.
        budget_trend: Change of the budget since the previous decision, as a fraction of the reference.
    """

    step: int
    total_steps: int | None
    group_ranks: list[int]
    r_max: int
    rank_step: int
    signals: Signals
    features: dict[str, float]
    observation: np.ndarray
    budget: MemoryBudget | None = None
    frozen: list[bool] = field(default_factory=list)
    budget_trend: float = 0.0

    @property
    def num_groups(self) -> int:
        """Number of groups G."""
        return len(self.group_ranks)

    def group_feature(self, name: str, default: float = 0.0) -> list[float]:
        """One named group feature of :attr:`signals` for every group (e.g. ``"importance_share"``)."""
        return [float(group.get(name, default)) for group in self.signals.groups]

    @classmethod
    def build(cls, signals: Signals, *, step: int, total_steps: int | None, r_max: int, rank_step: int,
              last_change: list[float] | None = None, budget: MemoryBudget | None = None,
              budget_trend: float = 0.0) -> ControllerContext:
        """The context of one decision, with the observation built exactly as the environment builds it.

        Args:
            signals: A fresh :meth:`SignalReader.read`.
            step: Optimizer steps taken so far.
            total_steps: Planned steps (``progress = step / total_steps``; 0 when ``None``).
            r_max: Largest rank of a group (``rank_frac = rank / r_max``).
            rank_step: Rank granularity.
            last_change: Sign of the previous decision's change per group (:attr:`Applied.last_change`);
                zeros before the first decision.
            budget: The memory budget, if any.
            budget_trend: Change of the budget since the previous decision / the reference memory.
        """
        layout = ObservationLayout(len(signals.groups))
        progress = min(1.0, step / total_steps) if total_steps else 0.0
        features = layout.build(signals, r_max=r_max, progress=progress,
                                last_change=last_change or [0.0] * layout.num_groups, budget_trend=budget_trend)
        return cls(step=step, total_steps=total_steps, group_ranks=[int(g["rank"]) for g in signals.groups],
                   r_max=r_max, rank_step=rank_step, signals=signals, features=features,
                   observation=layout.vector(features), budget=budget,
                   frozen=[bool(g.get("frozen", 0.0)) for g in signals.groups], budget_trend=budget_trend)


@dataclass
class Decision:
    """What a controller's rule asks for.

    Attributes:
        target_ranks: Requested rank per group (clipped by :meth:`RankController.apply`).
        reason: Why, in words (heuristics), or a summary of the chosen action (learned).
        frozen: Requested frozen flag per group (``None``: as now). Freezing keeps a group's learned update
            and stops its training; a thaw trains it again (and costs memory, so the wall may refuse it).
        probabilities: Per group, the policy's probability of each action level (learned only).
        action: The policy's action, one level index per group (learned only).
    """

    target_ranks: list[int]
    reason: str
    probabilities: list[list[float]] | None = None
    action: list[int] | None = None
    frozen: list[bool] | None = None


@dataclass
class Applied:
    """A decision after the clip into ``[0, r_max]`` and through the memory wall.

    Attributes:
        decision: The controller's decision.
        before: Group ranks before.
        requested: The targets clipped into ``[0, r_max]``.
        ranks: The ranks to apply (what fits the budget).
        clipped: Groups the wall changed: growth or thaw cut back, or freed because the run was over budget.
        predicted_used: Predicted memory at :attr:`ranks` (bytes), ``None`` without a budget.
        frozen_before: Frozen flags before.
        frozen: Frozen flags to apply.
        forced: Groups frozen or dropped by the wall because the run was over budget (a subset of ``clipped``).
    """

    decision: Decision
    before: list[int]
    requested: list[int]
    ranks: list[int]
    clipped: list[int] = field(default_factory=list)
    predicted_used: int | None = None
    frozen_before: list[bool] = field(default_factory=list)
    frozen: list[bool] = field(default_factory=list)
    forced: list[int] = field(default_factory=list)

    @property
    def last_change(self) -> list[float]:
        """Sign of each group's change, the ``last_change`` feature of the next observation."""
        return [float(np.sign(a - b)) for a, b in zip(self.ranks, self.before, strict=True)]

    @property
    def changed(self) -> bool:
        """Whether any group's rank or frozen flag changes."""
        return self.ranks != self.before or self.frozen != self.frozen_before


class RankController(ABC):
    """A rule (or policy) that sets the LoRA rank of every layer group.

    Subclasses implement :meth:`decide` and set :attr:`name`; those with state across decisions implement
    :meth:`state_dict` / :meth:`load_state_dict` so that a resumed run continues identically.

    Attributes:
        name: Registry name (``rankrl.controllers.CONTROLLERS``).
        requires_budget: The rule cannot work without a memory budget.
        requires_total_steps: The rule needs the planned number of steps (a schedule).
    """

    name: str = "controller"
    requires_budget: bool = False
    requires_total_steps: bool = False

    # ------------------------------------------------------------------ set-up
    def bind(self, *, num_groups: int, split_by_kind: bool, r_max: int, rank_step: int,  # noqa: B027 (optional hook)
             total_steps: int | None) -> None:
        """Check the controller against the run before training starts; raise a clear error on a mismatch.

        The default accepts every run. Called by :func:`rankrl.controllers.prepare_controller`.
        """

    def minimum_ranks(self, group_ranks: list[int], rank_step: int) -> list[list[int]]:
        """Candidate smallest configurations this controller can train in; the budget must fit one of them.

        The default, for controllers that may move every group: one group live at ``rank_step``, all others
        at 0 (the cheapest candidate is taken). Controllers with fixed ranks override it.
        """
        size = len(group_ranks)
        return [[rank_step if g == live else 0 for g in range(size)] for live in range(size)]

    # ------------------------------------------------------------------ deciding
    @abstractmethod
    def decide(self, ctx: ControllerContext) -> Decision:
        """The rule: target ranks per group from the context. Must not resize the model."""

    def apply(self, ctx: ControllerContext) -> Applied:
        """:meth:`decide`, then clip into ``[0, r_max]`` and through the memory wall.

        Growths and thaws are cut back to what fits (:func:`rankrl.budget.clip_to_budget`, most important
        group first by ``importance_share``); shrinks and freezes always apply. If the result is still over
        budget (the budget dropped, or the run started above it), :func:`rankrl.budget.fit_to_wall` frees
        memory in its documented order: freeze bottom-up, then drop frozen groups (before the first step,
        drop instead of freezing).

        Raises:
            ValueError: the controller returned the wrong number of ranks or frozen flags.
            WallError: not even every group at rank 0 fits the budget.
        """
        decision = self.decide(ctx)
        before = list(ctx.group_ranks)
        frozen_before = list(ctx.frozen) if ctx.frozen else [False] * len(before)
        if len(decision.target_ranks) != len(before):
            raise ValueError(f"Controller '{self.name}' returned {len(decision.target_ranks)} ranks for "
                             f"{len(before)} groups.")
        if decision.frozen is not None and len(decision.frozen) != len(before):
            raise ValueError(f"Controller '{self.name}' returned {len(decision.frozen)} frozen flags for "
                             f"{len(before)} groups.")
        requested = [min(max(int(r), 0), ctx.r_max) for r in decision.target_ranks]
        wanted = [bool(f) for f in decision.frozen] if decision.frozen is not None else frozen_before
        wanted = [f and r > 0 for f, r in zip(wanted, requested, strict=True)]
        if ctx.budget is None:
            return Applied(decision, before, requested, requested, frozen_before=frozen_before, frozen=wanted)
        priority = ctx.group_feature("importance_share")
        ranks, frozen, clipped = clip_to_budget(ctx.budget, before, requested, ctx.rank_step, priority,
                                                frozen_before, wanted)
        ranks, frozen, forced = fit_to_wall(ctx.budget, ranks, frozen, fresh=ctx.step == 0, priority=priority)
        if clipped or forced:
            notes = [f"growth of groups {clipped} cut at the wall"] if clipped else []
            if forced:
                how = "dropped" if ctx.step == 0 else "frozen or dropped"
                notes.append(f"groups {forced} {how} to get under the budget")
            decision.reason = f"{decision.reason}; wall: {', '.join(notes)}"
        return Applied(decision, before, requested, ranks, sorted(set(clipped) | set(forced)),
                       ctx.budget.predict_used(ranks, frozen), frozen_before, frozen, sorted(forced))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """JSON-serialisable state carried across decisions (empty for stateless rules)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        if state:
            raise ValueError(f"Controller '{self.name}' has no state, got keys {sorted(state)}.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
