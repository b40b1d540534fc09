"""Controllers by name, and the ``decisions.jsonl`` log."""

from __future__ import annotations

import json

import pytest

from rankrl.controllers import (
    CONTROLLERS,
    ComplexityController,
    DecisionLog,
    FixedController,
    GreedyMemoryController,
    ImportanceController,
    LayerwiseController,
    VarianceController,
    decision_record,
    make_controller,
)
from rankrl.env import ObservationLayout


def test_known_names():
    assert CONTROLLERS == ["fixed", "layerwise", "importance", "complexity", "variance", "greedy-memory", "static-fit",
                           "autofreeze", "learned"]
    assert isinstance(make_controller("fixed"), FixedController)
    assert isinstance(make_controller("layerwise:4,4"), LayerwiseController)
    assert isinstance(make_controller("importance"), ImportanceController)
    assert isinstance(make_controller("complexity"), ComplexityController)
    assert isinstance(make_controller("variance"), VarianceController)
    assert isinstance(make_controller("greedy-memory"), GreedyMemoryController)


def test_arguments_are_parsed():
    assert make_controller("fixed:8").rank == 8
    assert make_controller("layerwise:0,4,8,16").ranks == [0, 4, 8, 16]
    assert make_controller("layerwise:attention=4,mlp=8").by_kind == {"attention": 4, "mlp": 8}
    importance = make_controller("importance:target_rank=2.5,warmup-steps=10")
    assert (importance.target_rank, importance.warmup_steps) == (2.5, 10)
    assert make_controller("complexity", alpha=2.0).alpha == 2.0


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="Unknown controller 'adalora'. Known controllers: fixed, layerwise, "
                                         "importance, complexity, variance, greedy-memory, static-fit, "
                                         "autofreeze, learned"):
        make_controller("adalora")
    with pytest.raises(ValueError, match="Did you mean 'greedy-memory'"):
        make_controller("greedy_memory")


@pytest.mark.parametrize(("spec", "message"), [
    ("fixed:eight", "not an integer rank"),
    ("layerwise:4,x", "not an integer rank"),
    ("complexity:gamma=1", "Bad options for controller 'complexity'"),
    ("complexity:alpha", "expected key=value"),
    ("layerwise:attention=4", "exactly"),
    ("fixed:-1", "non-negative"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        make_controller(spec)


def test_learned_without_a_path_is_the_shipped_default_policy(monkeypatch, tmp_path):
    import rankrl.policy

    controller = make_controller("learned")
    assert controller.path == rankrl.policy.shipped_policy("default") / "policy.json"
    assert make_controller("learned:default").path == controller.path
    assert "default" in rankrl.policy.list_shipped_policies()
    monkeypatch.setattr(rankrl.policy, "shipped_policy_dirs", lambda: [tmp_path])
    with pytest.raises(ValueError, match="No shipped policy named 'default' .shipped: none.. Pass a policy directory"):
        make_controller("learned")


def test_decisions_are_logged_one_json_line_each(make_loop, tmp_path):
    loop = make_loop(budget_frac=1.06)
    controller = make_controller("greedy-memory")
    log = DecisionLog(tmp_path)
    loop.prepare(controller)
    for _ in range(2):
        step = loop.decide(controller)
        log.write(decision_record(step.ctx, step.applied, controller="greedy-memory", memory_after=step.measured))
    records = DecisionLog.read(tmp_path)
    assert len(records) == 2 == len((tmp_path / "decisions.jsonl").read_text().splitlines())
    first = records[0]
    assert first["step"] == 4 and first["controller"] == "greedy-memory"
    assert list(first["observation"]) == list(step.ctx.features)  # every layout's features: v1 policies explain too
    assert set(first["observation"]) == {n for v in (1, 2, 3) for n in ObservationLayout(2, v).names}
    assert first["ranks_before"] == [4, 4] and sum(first["ranks_after"]) == 10
    assert first["action"] == [a - b for a, b in zip(first["ranks_after"], first["ranks_before"], strict=True)]
    assert first["action_kind"] == "rank_deltas" and first["probabilities"] is None
    assert first["reason"].startswith("greedy-memory: headroom")
    assert first["memory_before"] == loop.start_used < first["memory_after"] <= first["budget"]
    assert first["memory_after_measured"] is True
    assert 0.0 <= first["eval_accuracy"] <= 1.0
    assert json.loads(json.dumps(first)) == first
