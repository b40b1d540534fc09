"""A deployment in miniature: train K steps, read signals, let the controller decide, resize, re-measure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rankrl.controllers import Applied, ControllerContext, RankController, prepare_controller
from rankrl.lora.allocation import apply_allocation
from rankrl.session import FineTuneSession
from rankrl.signals import SignalReader, Signals


@dataclass
class Step:
    """One decision of a :class:`Loop`."""

    ctx: ControllerContext
    applied: Applied
    measured: int | None  # measured memory after the resize


class Loop:
    """Drive ``session`` with a controller the way a deployment does.

    Args:
        session: The tiny session (reset here).
        budget_frac: Budget as a fraction of the memory measured at the start; ``None``: no budget.
        start_ranks: Group ranks to start from (default: the session's).
        total_steps: Planned optimizer steps.
        steps_per_decision: Optimizer steps between decisions.
    """

    r_max = 8
    rank_step = 2

    def __init__(self, session: FineTuneSession, budget_frac: float | None = 1.0, start_ranks: list[int] | None = None,
                 total_steps: int = 40, steps_per_decision: int = 4) -> None:
        session.reset(seed=0)
        if start_ranks is not None:
            session.set_group_ranks(start_ranks)
        self.session = session
        self.total_steps = total_steps
        self.steps_per_decision = steps_per_decision
        self.reader = SignalReader(session.rl, optimizer=session.optimizer, budget_bytes=2**62,
                                   memory_scope="adapter", rank_step=self.rank_step)
        session.after_backward = [lambda _s: self.reader.after_backward()]
        self.batch = session.train_batch(0)
        self.start_used = self.reader.budget.read(session.optimizer, self.batch).used
        self.budget = None
        if budget_frac is not None:
            self.budget = self.reader.budget
            self.budget.budget = int(budget_frac * self.start_used)
        self.steps: list[Step] = []

    def prepare(self, controller: RankController) -> int | None:
        return prepare_controller(controller, group_ranks=self.session.rl.group_ranks, r_max=self.r_max,
                                  rank_step=self.rank_step, split_by_kind=self.session.rl.split_by_kind,
                                  budget=self.budget, total_steps=self.total_steps)

    def context(self) -> ControllerContext:
        last = self.steps[-1].applied.last_change if self.steps else None
        return ControllerContext.build(self.reader.read(), step=self.session.step, total_steps=self.total_steps,
                                       r_max=self.r_max, rank_step=self.rank_step, last_change=last,
                                       budget=self.budget)

    def decide(self, controller: RankController) -> Step:
        """Train, evaluate, decide, resize and re-measure once."""
        result = self.session.train(self.steps_per_decision)
        for loss in result.losses:
            self.reader.update_loss(loss)
        self.reader.update_eval(self.session.evaluate().accuracy)
        ctx = self.context()
        applied = controller.apply(ctx)
        apply_allocation(self.session.rl, applied.ranks, applied.frozen, self.session.optimizer)
        measured = self.budget.read(self.session.optimizer, self.batch).used if self.budget is not None else None
        step = Step(ctx, applied, measured)
        self.steps.append(step)
        return step

    def run(self, controller: RankController, decisions: int | None = None) -> list[Step]:
        """:meth:`prepare`, then ``decisions`` decisions (default: until ``total_steps``)."""
        self.prepare(controller)
        count = decisions if decisions is not None else self.total_steps // self.steps_per_decision
        return [self.decide(controller) for _ in range(count)]

    def assert_within_wall(self) -> None:
        """Predicted and re-measured memory after every decision are within the budget."""
        assert self.steps
        for step in self.steps:
            assert step.applied.predicted_used <= self.budget.budget, step.applied
            assert step.measured <= self.budget.budget, step.applied
        assert self.session.rl.group_ranks == self.steps[-1].applied.ranks

    def close(self) -> None:
        self.reader.close()


def fake_context(ranks: list[int], step: int = 0, total_steps: int | None = 100, r_max: int = 8,
                 rank_step: int = 2, **group_features: list[float]) -> ControllerContext:
    """A context from hand-made group features (e.g. ``complexity=[0.1, 0.5]``), no model involved."""
    groups = [{"rank": float(r)} for r in ranks]
    for name, values in group_features.items():
        for group, value in zip(groups, values, strict=True):
            group[name] = float(value)
    signals = Signals(modules={}, groups=groups, scalars={})
    ctx = ControllerContext.build(signals, step=step, total_steps=total_steps, r_max=r_max, rank_step=rank_step)
    assert isinstance(ctx.observation, np.ndarray)
    return ctx
