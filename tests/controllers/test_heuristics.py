"""Each heuristic controller on the tiny model: it runs, respects the wall, and changes ranks when its rule says so."""

from __future__ import annotations

import dataclasses
import math

import pytest

from rankrl.controllers import (
    ComplexityController,
    FixedController,
    GreedyMemoryController,
    ImportanceController,
    LayerwiseController,
    VarianceController,
    prepare_controller,
)
from rankrl.session import FineTuneSession

from .conftest import TINY
from .helpers import fake_context


# ---------------------------------------------------------------------------------------------- fixed
def test_fixed_sets_its_rank_at_the_first_decision_and_never_changes(make_loop):
    loop = make_loop(budget_frac=1.2)
    steps = loop.run(FixedController(8), decisions=4)
    assert [s.applied.ranks for s in steps] == [[8, 8]] * 4
    assert steps[0].applied.before == [4, 4] and not any(s.applied.changed for s in steps[1:])
    loop.assert_within_wall()


def test_fixed_without_rank_is_a_no_op(make_loop):
    loop = make_loop(budget_frac=1.0)
    steps = loop.run(FixedController(), decisions=3)
    assert all(s.applied.ranks == [4, 4] and not s.applied.changed for s in steps)


def test_a_fixed_rank_above_the_budget_is_brought_under_it_by_the_wall(make_loop):
    loop = make_loop(budget_frac=1.0)
    controller = FixedController(8)
    loop.prepare(controller)  # feasible: the wall can always drop or freeze groups
    applied = controller.apply(dataclasses.replace(loop.context(), step=0))
    assert applied.requested == [8, 8] and applied.ranks == [4, 4] and applied.clipped == [0, 1]  # growth cut
    assert applied.predicted_used <= loop.budget.budget


# ---------------------------------------------------------------------------------------------- layerwise
def test_layerwise_sets_the_configured_ranks(make_loop):
    loop = make_loop(budget_frac=1.0)
    steps = loop.run(LayerwiseController([2, 6]), decisions=2)
    assert [s.applied.ranks for s in steps] == [[2, 6], [2, 6]]
    assert set(loop.session.rl.ranks.values()) == {2, 6}
    loop.assert_within_wall()


def test_layerwise_by_kind_maps_even_groups_to_attention_and_odd_to_mlp():
    from dataclasses import replace

    session = FineTuneSession(replace(TINY, num_groups=1, split_by_kind=True))
    controller = LayerwiseController(by_kind={"attention": 2, "mlp": 6})
    prepare_controller(controller, group_ranks=session.rl.group_ranks, r_max=8, rank_step=2, split_by_kind=True)
    applied = controller.apply(fake_context(session.rl.group_ranks))
    session.set_group_ranks(applied.ranks)
    assert applied.ranks == [2, 6]
    for name, rank in session.rl.ranks.items():
        assert rank == (2 if ".attention." in name else 6), name


def test_layerwise_refuses_a_run_it_does_not_fit():
    with pytest.raises(ValueError, match="3 ranks .* 2 groups"):
        LayerwiseController([2, 4, 6]).bind(num_groups=2, split_by_kind=False, r_max=8, rank_step=2, total_steps=None)
    with pytest.raises(ValueError, match="split_by_kind"):
        LayerwiseController(by_kind={"attention": 2, "mlp": 4}).bind(num_groups=2, split_by_kind=False, r_max=8,
                                                                     rank_step=2, total_steps=None)
    with pytest.raises(ValueError, match="above r_max"):
        LayerwiseController([2, 16]).bind(num_groups=2, split_by_kind=False, r_max=8, rank_step=2, total_steps=None)


# ---------------------------------------------------------------------------------------------- importance
def test_importance_schedule_is_adaloras_cubic():
    controller = ImportanceController(target_rank=1, warmup_steps=10, final_steps=20)
    assert controller.budget_at(10, 100, 16, 2) == 16
    assert controller.budget_at(80, 100, 16, 2) == pytest.approx(2)
    assert controller.budget_at(45, 100, 16, 2) == pytest.approx(2 + 14 * 0.5**3)
    assert controller.budget_at(95, 100, 16, 2) == 2


def test_importance_shrinks_total_rank_on_schedule_and_frees_memory(make_loop):
    loop = make_loop(budget_frac=1.0, total_steps=40)
    controller = ImportanceController(target_rank=1, warmup_steps=8, final_steps=8)
    steps = loop.run(controller)
    totals = [sum(s.applied.ranks) for s in steps]
    assert [s.applied.ranks for s in steps if s.ctx.step <= 8] == [[4, 4], [4, 4]]  # warm-up holds
    assert all(a >= b for a, b in zip(totals, totals[1:], strict=False))
    assert totals[-1] == 2 and min(steps[-1].applied.ranks) == 0  # b_T = 1 * G; a group really left
    for s in steps:  # between decisions the ranks are the schedule's budget, split by importance
        if 8 < s.ctx.step <= 32:
            budget = controller.budget_at(s.ctx.step, 40, 8, 2)
            assert sum(s.applied.requested) == min(2 * round(budget / 2), 16)
    assert steps[-1].measured < 0.8 * loop.start_used
    loop.assert_within_wall()


def test_importance_splits_by_importance_with_a_floor_of_zero():
    controller = ImportanceController(target_rank=2, warmup_steps=0, final_steps=0)
    ctx = fake_context([4, 4, 4, 4], step=100, total_steps=100, importance=[9.0, 3.0, 0.0, 0.0])
    assert controller.decide(ctx).target_ranks == [6, 2, 0, 0]


def test_importance_needs_total_steps(make_loop):
    loop = make_loop(budget_frac=1.0)
    loop.total_steps = None
    with pytest.raises(ValueError, match="total_steps"):
        loop.prepare(ImportanceController())


# ---------------------------------------------------------------------------------------------- complexity
def test_complexity_is_uniform_during_warmup_then_follows_the_rule(make_loop):
    loop = make_loop(budget_frac=1.3, start_ranks=[2, 6])
    controller = ComplexityController(alpha=4.0, warmup_steps=8)
    steps = loop.run(controller, decisions=5)
    assert [s.applied.requested for s in steps if s.ctx.step < 8] == [[4, 4]]
    beta = controller.state_dict()["beta"]
    first_logs = [math.log(c) for c in steps[1].ctx.group_feature("complexity")]
    assert beta == pytest.approx(4 - 4.0 * sum(first_logs) / 2)  # calibrated at the end of warm-up
    for s in steps[1:]:
        expected = [min(max(2 * round(round(4.0 * math.log(c) + beta) / 2), 2), 8)
                    for c in s.ctx.group_feature("complexity")]
        assert s.applied.requested == expected
    loop.assert_within_wall()


def test_complexity_rule_gives_more_rank_to_more_complex_groups():
    controller = ComplexityController(alpha=2.0, beta=10.0, warmup_steps=0)
    ctx = fake_context([4, 4, 4], complexity=[math.exp(-3), math.exp(-1), 0.0])
    assert controller.decide(ctx).target_ranks == [4, 8, 2]  # 2·(-3)+10, 2·(-1)+10 clipped to 8, floor


def test_complexity_state_resumes_identically():
    first = ComplexityController(alpha=2.0, warmup_steps=5)
    first.decide(fake_context([2, 6], step=0, complexity=[0.1, 0.2]))
    ctx = fake_context([4, 4], step=5, complexity=[0.05, 0.5])
    expected = first.decide(ctx).target_ranks
    resumed = ComplexityController(alpha=2.0, warmup_steps=5)
    resumed.load_state_dict(first.state_dict())
    assert resumed.decide(ctx).target_ranks == expected
    assert expected[0] < expected[1]


# ---------------------------------------------------------------------------------------------- variance
def test_variance_runs_and_favours_the_group_with_more_input_variance(make_loop):
    loop = make_loop(budget_frac=1.0)
    steps = loop.run(VarianceController(), decisions=3)
    for s in steps:
        variance = s.ctx.group_feature("input_variance")
        assert sum(s.applied.requested) == 8
        high, low = (0, 1) if variance[0] >= variance[1] else (1, 0)
        assert s.applied.requested[high] >= s.applied.requested[low]
    loop.assert_within_wall()


def test_variance_splits_the_total_rank_in_proportion():
    ctx = fake_context([4, 4], input_variance=[1.0, 3.0])
    assert VarianceController().decide(ctx).target_ranks == [2, 6]
    assert VarianceController(total_rank=8, power=2.0).decide(ctx).target_ranks == [0, 8]  # 1:9 of 4 units


# ---------------------------------------------------------------------------------------------- greedy-memory
def test_greedy_grows_the_most_important_group_while_the_budget_allows(make_loop):
    loop = make_loop(budget_frac=1.06)
    steps = loop.run(GreedyMemoryController(), decisions=4)
    for s in steps:
        shares = s.ctx.group_feature("importance_share")
        if s.applied.changed:
            (g,) = [g for g in range(2) if s.applied.ranks[g] != s.applied.before[g]]
            assert s.applied.ranks[g] == s.applied.before[g] + 2
            growable = [h for h in range(2) if s.applied.before[h] < 8]
            assert g == max(growable, key=lambda h: (shares[h], -h))
            assert "fits" in s.applied.decision.reason
    assert steps[0].applied.changed and sum(steps[-1].applied.ranks) > 8
    assert any("too small" in s.applied.decision.reason for s in steps)  # 6% headroom runs out
    loop.assert_within_wall()


def test_greedy_shrinks_the_least_important_group_when_over_budget(make_loop):
    loop = make_loop(budget_frac=0.98)
    step = loop.run(GreedyMemoryController(), decisions=1)[0]
    shares = step.ctx.group_feature("importance_share")
    least = min(range(2), key=lambda g: (shares[g], g))
    assert step.applied.decision.target_ranks[least] == 2 and sum(step.applied.decision.target_ranks) == 6
    assert "over budget" in step.applied.decision.reason
    loop.assert_within_wall()


def test_greedy_needs_a_budget(make_loop):
    loop = make_loop(budget_frac=None)
    with pytest.raises(ValueError, match="needs a memory budget"):
        loop.prepare(GreedyMemoryController())
