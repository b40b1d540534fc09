"""The controller interface: what a rank controller sees, what it decides, and the memory wall it meets.

A controller sees the same named observation the environment builds (:class:`ControllerContext`) and returns
target ranks per group (:class:`Decision`). :meth:`RankController.apply` is the single place where every
controller's targets are clipped into ``[0, r_max]`` and through the memory wall, so a learned policy and a
heuristic are compared on equal terms. Applying the result (``RankedLoRA.set_group_ranks``) is the caller's
job; a controller never resizes the model.

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

from rankrl.env.observation import ObservationLayout
from rankrl.signals import MemoryBudget, Signals
from rankrl.wall import clip_to_budget

MIB = 1024 * 1024


class WallError(RuntimeError):
    """Even every group at rank 0 exceeds the memory budget (the set-up check prevents this)."""


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

    @property
    def num_groups(self) -> int:
        """Number of groups G."""
        return len(self.group_ranks)

    def group_feature(self, name: str, default: float = 0.0) -> list[float]:
        """One named group feature of :attr:`signals` for every group (e.g. ``"importance_share"``)."""
        return [float(group.get(name, default)) for group in self.signals.groups]

    @classmethod
    def build(cls, signals: Signals, *, step: int, total_steps: int | None, r_max: int, rank_step: int,
              last_change: list[float] | None = None, budget: MemoryBudget | None = None) -> ControllerContext:
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
        """
        layout = ObservationLayout(len(signals.groups))
        progress = min(1.0, step / total_steps) if total_steps else 0.0
        features = layout.build(signals, r_max=r_max, progress=progress,
                                last_change=last_change or [0.0] * layout.num_groups)
        return cls(step=step, total_steps=total_steps, group_ranks=[int(g["rank"]) for g in signals.groups],
                   r_max=r_max, rank_step=rank_step, signals=signals, features=features,
                   observation=layout.vector(features), budget=budget)


@dataclass
class Decision:
    """What a controller's rule asks for.

    Attributes:
        target_ranks: Requested rank per group (clipped by :meth:`RankController.apply`).
        reason: Why, in words (heuristics), or a summary of the chosen action (learned).
        probabilities: Per group, the policy's probability of each action level (learned only).
        action: The policy's action, one level index per group (learned only).
    """

    target_ranks: list[int]
    reason: str
    probabilities: list[list[float]] | None = None
    action: list[int] | None = None


@dataclass
class Applied:
    """A decision after the clip into ``[0, r_max]`` and through the memory wall.

    Attributes:
        decision: The controller's decision.
        before: Group ranks before.
        requested: The targets clipped into ``[0, r_max]``.
        ranks: The ranks to apply (what fits the budget).
        clipped: Groups the wall changed: growth cut back, or shrunk because the run was over budget.
        predicted_used: Predicted memory at :attr:`ranks` (bytes), ``None`` without a budget.
    """

    decision: Decision
    before: list[int]
    requested: list[int]
    ranks: list[int]
    clipped: list[int] = field(default_factory=list)
    predicted_used: int | None = None

    @property
    def last_change(self) -> list[float]:
        """Sign of each group's change, the ``last_change`` feature of the next observation."""
        return [float(np.sign(a - b)) for a, b in zip(self.ranks, self.before, strict=True)]

    @property
    def changed(self) -> bool:
        """Whether any group's rank changes."""
        return self.ranks != self.before


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

        Growths are cut back to what fits (:func:`rankrl.wall.clip_to_budget`, most important group first by
        ``importance_share``); shrinks always apply. If the result is still over budget (e.g. the run started
        above it), the least important live groups are shrunk by ``rank_step`` until it fits.

        Raises:
            ValueError: the controller returned the wrong number of ranks.
            WallError: not even every group at rank 0 fits the budget.
        """
        decision = self.decide(ctx)
        before = list(ctx.group_ranks)
        if len(decision.target_ranks) != len(before):
            raise ValueError(f"Controller '{self.name}' returned {len(decision.target_ranks)} ranks for "
                             f"{len(before)} groups.")
        requested = [min(max(int(r), 0), ctx.r_max) for r in decision.target_ranks]
        if ctx.budget is None:
            return Applied(decision, before, requested, requested)
        priority = ctx.group_feature("importance_share")
        ranks, clipped = clip_to_budget(ctx.budget, before, requested, ctx.rank_step, priority)
        ranks, forced = _shrink_until_fit(ctx.budget, ranks, ctx.rank_step, priority)
        if clipped or forced:
            notes = [f"growth of groups {clipped} cut at the wall"] if clipped else []
            notes += [f"groups {forced} shrunk to get under the budget"] if forced else []
            decision.reason = f"{decision.reason}; wall: {', '.join(notes)}"
        return Applied(decision, before, requested, ranks, sorted(set(clipped) | set(forced)),
                       ctx.budget.predict_used(ranks))

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


def _shrink_until_fit(budget: MemoryBudget, ranks: list[int], rank_step: int,
                      priority: list[float]) -> tuple[list[int], list[int]]:
    """Shrink the least important live group by ``rank_step`` until the ranks fit the budget."""
    ranks, forced = list(ranks), []
    order = sorted(range(len(ranks)), key=lambda g: (priority[g], g))
    while not budget.would_fit(ranks):
        live = [g for g in order if ranks[g] > 0]
        if not live:
            raise WallError(f"Every group at rank 0 still needs {budget.predict_used(ranks) / MIB:.2f} MiB, above "
                            f"the budget of {budget.budget / MIB:.2f} MiB. Raise the budget.")
        ranks[live[0]] = max(0, ranks[live[0]] - rank_step)
        if live[0] not in forced:
            forced.append(live[0])
    return ranks, forced
