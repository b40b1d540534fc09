"""``autofreeze``: AutoFreeze's percentile rule on gradient-norm changes, bottom-up, never the top group."""

from __future__ import annotations

import warnings

import pytest

from rankrl.controllers import make_controller

from .helpers import fake_context


def decide(controller, norms, ranks=(4, 4, 4), frozen=None):
    ctx = fake_context(list(ranks), grad_norm=norms)
    ctx.frozen = list(frozen) if frozen is not None else [False] * len(ranks)
    return controller.decide(ctx)


def test_the_bottom_group_freezes_once_its_gradient_norm_settles():
    controller = make_controller("autofreeze")
    assert decide(controller, [1.0, 1.0, 1.0]).frozen == [False, False, False]  # first reading: watch
    # relative changes 0.02, 0.5, 0.5: the bottom one is at or below the median
    decision = decide(controller, [1.02, 1.5, 1.5])
    assert decision.frozen == [True, False, False] and "group 0 converged" in decision.reason


def test_a_group_without_a_previous_gradient_is_still_moving_and_warns_nothing():
    controller = make_controller("autofreeze")
    decide(controller, [1.0, 0.0, 0.0, 1.0], ranks=(4, 4, 4, 4))  # groups 1 and 2 had no gradient yet
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decision = decide(controller, [1.5, 1.0, 1.0, 1.01], ranks=(4, 4, 4, 4))
    # changes 0.5, inf, inf, 0.01: the median (lower) is 0.5, which the bottom group's change meets
    assert decision.frozen == [True, False, False, False]


def test_a_moving_bottom_group_keeps_training():
    controller = make_controller("autofreeze")
    decide(controller, [1.0, 1.0, 1.0])
    decision = decide(controller, [2.0, 1.01, 1.01])  # the bottom moves most
    assert decision.frozen == [False, False, False] and "still moving" in decision.reason


def test_only_the_lowest_training_group_is_a_candidate_and_the_top_never_freezes():
    controller = make_controller("autofreeze")
    decide(controller, [1.0, 1.0, 1.0], frozen=[True, False, False])
    decision = decide(controller, [1.0, 1.0, 1.5], frozen=[True, False, False])
    assert decision.frozen == [True, True, False]  # group 1 is now the bottom of what trains
    decide(controller, [1.0, 1.0, 1.0], frozen=[True, True, False])
    assert decide(controller, [1.0, 1.0, 1.0], frozen=[True, True, False]).frozen == [True, True, False]


def test_ranks_never_change_and_state_round_trips():
    controller = make_controller("autofreeze:percentile=25")
    decide(controller, [1.0, 2.0, 3.0])
    assert decide(controller, [1.0, 2.0, 3.0]).target_ranks == [4, 4, 4]
    clone = make_controller("autofreeze:percentile=25")
    clone.load_state_dict(controller.state_dict())
    assert clone.state_dict() == controller.state_dict() == {"previous": [1.0, 2.0, 3.0]}


def test_bad_percentile():
    with pytest.raises(ValueError, match="percentile must be in"):
        make_controller("autofreeze:percentile=150")


def test_freezing_in_a_real_run_stays_within_the_wall(make_loop):
    loop = make_loop(budget_frac=1.0)
    steps = loop.run(make_controller("autofreeze:percentile=100"), decisions=3)
    assert loop.session.rl.frozen_groups == [True, False]  # percentile 100: freeze as soon as it can
    assert steps[-1].applied.ranks == [4, 4]
    loop.assert_within_wall()
