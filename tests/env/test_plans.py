"""The plan head's grid: the allocations static-fit tries, in its order, and the index of a requested one."""

from __future__ import annotations

import pytest

from rankrl.env.plans import NO_PLAN, plan_index, plan_names, plan_ranks


def test_plans_are_none_then_the_top_groups_at_each_rank_in_static_fit_order():
    assert plan_names(2, 8, 4) == [NO_PLAN, "top2@8", "top2@4", "top1@8", "top1@4"]
    assert plan_names(4, 16, 2)[1:3] == ["top4@16", "top4@14"] and len(plan_names(4, 16, 2)) == 1 + 4 * 8
    assert plan_names(1, 7, 2) == [NO_PLAN, "top1@6", "top1@4", "top1@2"]  # r_max off the grid: the grid's top


def test_a_plan_sets_the_groups_below_to_rank_zero():
    assert plan_ranks("top2@6", 4) == [0, 0, 6, 6] and plan_ranks("top4@2", 4) == [2, 2, 2, 2]
    assert plan_ranks(NO_PLAN, 4) is None
    for bad in ("top5@2", "top0@2", "bottom2@4", "top2"):
        with pytest.raises(ValueError, match="is not a plan for 4 groups"):
            plan_ranks(bad, 4)
    with pytest.raises(ValueError, match="r_max >= rank_step"):
        plan_names(2, 1, 2)


def test_the_index_of_an_allocation_is_its_plan_or_none():
    names = plan_names(4, 16, 2)
    assert names[plan_index(names, [0, 0, 6, 6])] == "top2@6"
    assert names[plan_index(names, [0, 0, 0, 8])] == "top1@8"
    assert plan_index(names, [0, 2, 6, 6]) == 0  # not uniform over the top groups
    assert plan_index(names, [0, 0, 6, 6], [False, False, True, False]) == 0  # a freeze is no plan
    assert plan_index(names, [0, 0, 0, 0]) == 0
