"""``static-fit``: the top-most groups at the highest uniform rank that fits the budget's floor, then held."""

from __future__ import annotations

import dataclasses

import pytest

from rankrl.controllers import make_controller


def first(loop, spec: str):
    """Prepare ``spec`` on the loop and make its decision before the first step."""
    controller = make_controller(spec)
    loop.prepare(controller)
    return controller, controller.apply(dataclasses.replace(loop.context(), step=0))


def test_at_the_reference_budget_it_is_plain_lora_at_the_starting_rank(make_loop):
    loop = make_loop(budget_frac=1.0)
    _, applied = first(loop, "static-fit")
    assert applied.ranks == [4, 4] and not applied.clipped


def test_under_a_tight_budget_it_keeps_the_top_groups(make_loop):
    loop = make_loop(budget_frac=0.6)
    _, applied = first(loop, "static-fit")
    assert applied.ranks[0] == 0 and applied.ranks[1] > 0  # depth goes first, from the bottom
    assert applied.predicted_used <= loop.budget.budget and not applied.forced
    assert "static-fit: top 1 of 2 groups" in applied.decision.reason


def test_it_fits_the_floor_of_a_moving_budget_and_holds(make_loop):
    loop = make_loop(budget_frac=1.0)
    loop.budget.floor = int(0.6 * loop.budget.budget)  # the lowest the run will see
    controller, applied = first(loop, "static-fit")
    assert applied.ranks[0] == 0  # chosen for the floor, not for today's budget
    loop.session.rl.set_group_ranks(applied.ranks)
    assert controller.decide(loop.context()).target_ranks == applied.ranks  # held
    assert controller.state_dict() == {"ranks": applied.ranks}


def test_it_needs_a_budget(make_loop):
    with pytest.raises(ValueError, match="'static-fit' needs a memory budget"):
        make_loop(budget_frac=None).prepare(make_controller("static-fit"))


def test_a_cap_spends_at_most_that_fraction_of_the_reference(make_loop):
    loop = make_loop(budget_frac=1.0)
    loop.budget.reference = loop.budget.budget
    _, capped = first(loop, "static-fit:cap=0.6")
    _, tight = first(make_loop(budget_frac=0.6), "static-fit")
    assert capped.ranks == tight.ranks and capped.ranks[0] == 0  # as if the budget were 0.6 of the reference
    assert capped.predicted_used <= 0.6 * loop.budget.reference
    tight_loop = make_loop(budget_frac=0.6)
    tight_loop.budget.reference = loop.budget.reference
    _, under = first(tight_loop, "static-fit:cap=1.0")
    assert under.ranks == tight.ranks  # a cap above the budget changes nothing
    for cap in ("0", "1.5", "-0.5"):
        with pytest.raises(ValueError, match=r"cap is a fraction of the reference memory in \(0, 1\]"):
            make_controller(f"static-fit:cap={cap}")


def test_a_cap_needs_a_reference(make_loop):
    loop = make_loop(budget_frac=1.0)
    loop.budget.reference = None
    with pytest.raises(ValueError, match="this run has none"):
        first(loop, "static-fit:cap=0.5")
