"""The memory wall every controller meets in ``RankController.apply``, and the budget check before training."""

from __future__ import annotations

import dataclasses

import pytest

from rankrl.controllers import (
    BudgetTooSmallError,
    ControllerContext,
    Decision,
    RankController,
    WallError,
    check_budget_trainable,
)
from tests.controllers.helpers import fake_context


class Constant(RankController):
    """Asks for the same ranks at every decision (``None``: hold)."""

    name = "constant"

    def __init__(self, ranks: list[int] | None = None) -> None:
        self.ranks = ranks

    def decide(self, ctx: ControllerContext) -> Decision:
        return Decision(list(self.ranks or ctx.group_ranks), "test")


def test_growth_is_cut_at_the_wall(make_loop):
    loop = make_loop(budget_frac=1.05)
    steps = loop.run(Constant([8, 8]), decisions=3)
    assert steps[0].applied.requested == [8, 8]
    assert steps[0].applied.ranks != [8, 8] and steps[0].applied.clipped
    assert sum(steps[0].applied.ranks) > 8  # what fits is still granted
    assert "cut at the wall" in steps[0].applied.decision.reason
    loop.assert_within_wall()


def test_requests_are_clipped_into_zero_to_r_max(make_loop):
    loop = make_loop(budget_frac=None)
    applied = loop.run(Constant([-3, 99]), decisions=1)[0].applied
    assert applied.requested == applied.ranks == [0, 8]
    assert applied.predicted_used is None and applied.last_change == [-1.0, 1.0]


def test_a_run_over_budget_freezes_bottom_up_until_it_fits(make_loop):
    loop = make_loop(budget_frac=0.9)
    step = loop.run(Constant(), decisions=1)[0]  # the rule holds, the wall does not
    assert step.applied.requested == step.applied.ranks == [4, 4]  # freezing keeps what was learned
    assert step.applied.frozen == [True, False] and step.applied.forced == [0]
    assert "frozen or dropped to get under the budget" in step.applied.decision.reason
    loop.assert_within_wall()


def test_before_the_first_step_the_wall_drops_instead_of_freezing(make_loop):
    loop = make_loop(budget_frac=0.9)
    loop.prepare(Constant())
    applied = Constant().apply(dataclasses.replace(loop.context(), step=0))
    assert applied.ranks == [0, 4] and applied.frozen == [False, False] and applied.forced == [0]


def test_wall_error_when_nothing_fits(make_loop):
    loop = make_loop(budget_frac=1.0)
    loop.budget.budget = 1000  # below the head alone
    with pytest.raises(WallError, match="Raise the budget"):
        Constant().apply(loop.context())


def test_budget_below_the_smallest_trainable_configuration_fails_before_training(make_loop):
    loop = make_loop(budget_frac=1.0)
    cheapest = min(loop.budget.predict_used(r) for r in ([2, 0], [0, 2]))
    loop.budget.budget = cheapest - 1
    with pytest.raises(BudgetTooSmallError, match=r"controller 'constant'.*need (\d+\.\d\d) MiB"):
        loop.prepare(Constant())
    loop.budget.budget = cheapest
    assert check_budget_trainable(loop.budget, [[2, 0], [0, 2]]) == cheapest
    assert loop.session.step == 0


def test_wrong_number_of_ranks_is_a_clear_error():
    with pytest.raises(ValueError, match="returned 3 ranks for 2 groups"):
        Constant([1, 2, 3]).apply(fake_context([4, 4]))


def test_context_observation_is_the_environments():
    from rankrl.env import ObservationLayout

    ctx = fake_context([4, 0], step=25, total_steps=100, importance_share=[0.7, 0.3])
    layout = ObservationLayout(2)
    assert set(layout.names) < set(ctx.features)  # and the v1 features, for v1 policies
    assert ctx.features["progress"] == 0.25 and ctx.features["group0/rank_frac"] == 0.5
    assert ctx.observation.shape == (len(layout.names),)
    assert ctx.observation[layout.names.index("group0/importance_share")] == pytest.approx(0.7)
