"""The observation layout: names and bounds in a fixed order, clipping, and a size set by the groups alone."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankrl.env.observation import (
    GLOBAL_FEATURES,
    GROUP_FEATURES,
    ObservationLayout,
    ObservationMismatchError,
)
from rankrl.signals.reader import Signals


def signals(num_groups: int, modules_per_group: int, hidden: int) -> Signals:
    """A reading of a model with ``num_groups * modules_per_group`` adapted modules of width ``hidden``."""
    modules = {f"layer{i}.dense": {"rank": 4.0, "width": float(hidden)}
               for i in range(num_groups * modules_per_group)}
    groups = [{"rank": 4.0 * (g + 1), "importance_share": 1.0 / num_groups, "grad_norm_share": 0.5,
               "input_variance_share": 0.25, "rank_utilization": 0.75, "grow_cost_frac": 0.125,
               "freeze_free_frac": 0.0625, "grow_cost_ref": 0.075, "freeze_free_ref": 0.0375,
               "frozen": 0.0} for g in range(num_groups)]
    scalars = {"loss/ema_rel": 0.9, "loss/slope_rel": -0.002, "eval/accuracy": 0.8, "eval/accuracy_delta": 0.05,
               "eval/gain": 0.6, "eval/gain_delta": 0.1,
               "memory/used_frac": 0.7, "memory/headroom_frac": 0.3, "budget/ref_frac": 0.6, "budget/floor_frac": 0.4}
    return Signals(modules=modules, groups=groups, scalars=scalars)


def test_names_are_the_run_features_then_each_groups_in_order():
    layout = ObservationLayout(2)
    expected = [name for name, _, _ in GLOBAL_FEATURES] + [
        f"group{g}/{name}" for g in (0, 1) for name, _, _ in GROUP_FEATURES]
    assert layout.names == expected
    assert len(layout.names) == len(GLOBAL_FEATURES) + 2 * len(GROUP_FEATURES)


def test_bounds_follow_the_names():
    low, high = ObservationLayout(3).bounds
    names = ObservationLayout(3).names
    assert low.dtype == np.float32 and high.dtype == np.float32
    assert low.shape == high.shape == (len(names),)
    assert low[names.index("memory/used_frac")] == 0.0 and high[names.index("memory/used_frac")] == 2.0
    assert low[names.index("group2/last_change")] == -1.0 and high[names.index("group2/last_change")] == 1.0
    assert (low < high).all()


def test_build_reads_each_feature_from_the_signals():
    layout = ObservationLayout(2)
    values = layout.build(signals(2, 3, 32), r_max=16, last_change=[0.5, -0.25], progress=0.4, budget_trend=-0.1)
    assert set(values) == {n for version in (1, 2, 3) for n in ObservationLayout(2, version).names}
    assert values["eval/gain"] == 0.6 and values["eval/accuracy"] == 0.8 and values["budget/floor_frac"] == 0.4
    assert values["loss/slope_x100"] == pytest.approx(-0.2)
    assert values["group0/rank_frac"] == 0.25 and values["group1/rank_frac"] == 0.5
    assert values["group1/last_change"] == -0.25 and values["group0/grow_cost_frac"] == 0.125
    assert values["group0/grow_cost_ref"] == 0.075 and values["group1/freeze_free_ref"] == 0.0375
    assert values["budget/trend"] == -0.1 and values["progress"] == 0.4


def test_vector_clips_into_the_bounds_and_replaces_nan():
    layout = ObservationLayout(1)
    values = dict.fromkeys(layout.names, 0.5)
    values.update({"memory/used_frac": 5.0, "budget/trend": -7.0, "eval/gain": math.nan,
                   "loss/ema_rel": math.inf, "group0/last_change": -math.inf})
    vector = layout.vector(values)
    names = layout.names
    assert vector.dtype == np.float32 and vector.shape == (len(names),)
    assert vector[names.index("memory/used_frac")] == 2.0
    assert vector[names.index("budget/trend")] == -1.0
    assert vector[names.index("eval/gain")] == 0.0
    assert vector[names.index("loss/ema_rel")] == 3.0
    assert vector[names.index("group0/last_change")] == -1.0
    assert vector[names.index("group0/rank_frac")] == 0.5
    low, high = layout.bounds
    assert ((vector >= low) & (vector <= high)).all()


def test_the_observation_of_a_larger_model_with_the_same_groups_is_the_same_vector():
    layout = ObservationLayout(2)
    small = layout.vector(layout.build(signals(2, 3, 32), r_max=16, last_change=[0.0, 0.0], progress=0.5))
    large = layout.vector(layout.build(signals(2, 24, 1024), r_max=16, last_change=[0.0, 0.0], progress=0.5))
    np.testing.assert_array_equal(small, large)
    assert ObservationLayout(3).vector(dict.fromkeys(ObservationLayout(3).names, 0.0)).shape != small.shape


def test_each_environment_version_has_its_layout_and_a_saved_one_names_it():
    v1, v2, v3 = ObservationLayout(2, 1), ObservationLayout(2, 2), ObservationLayout(2, 3)
    assert ObservationLayout(2) == v3 and len(v2.names) == len(v1.names) + 1 and len(v3.names) == len(v2.names)
    assert [n for n in v1.names if n not in v2.names] == ["eval/accuracy", "eval/accuracy_delta"]
    assert [n for n in v2.names if n not in v1.names] == ["eval/gain", "eval/gain_delta", "budget/floor_frac"]
    assert [n for n in v3.names if n not in v2.names][:2] == ["group0/grow_cost_ref", "group0/freeze_free_ref"]
    assert all(ObservationLayout.of(v.to_dict()) == v for v in (v1, v2, v3))
    unversioned = {"num_groups": 2, "features": v1.names}  # as policies saved before layouts had a version
    assert ObservationLayout.of(unversioned) == v1
    with pytest.raises(ObservationMismatchError, match="no observation layout v7; this rankrl knows v1, v2, v3"):
        ObservationLayout(2, 7)
    missing = r"missing \['budget/floor_frac', 'eval/gain', 'eval/gain_delta'\]"
    with pytest.raises(ObservationMismatchError, match=missing):
        v2.check(v1.to_dict())


def test_check_accepts_its_own_layout_and_names_the_mismatch():
    layout = ObservationLayout(2)
    layout.check(layout.to_dict())
    with pytest.raises(ObservationMismatchError, match="trained for 4 layer groups but this run has 2"):
        layout.check(ObservationLayout(4).to_dict())
    reordered = {"num_groups": 2, "features": list(reversed(layout.names))}
    with pytest.raises(ObservationMismatchError, match="same features in another order"):
        layout.check(reordered)
    renamed = {"num_groups": 2, "features": [*layout.names[:-1], "group1/novel"]}
    message = r"missing \['group1/last_change'\], unexpected \['group1/novel'\]"
    with pytest.raises(ObservationMismatchError, match=message):
        layout.check(renamed, source="policy.json")
