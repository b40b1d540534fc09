"""The learned controller: an SB3 policy saved like ``rankrl train`` saves it, checked against the live run."""

from __future__ import annotations

import json
import math
import zipfile

import pytest
import torch
from stable_baselines3 import PPO

from rankrl.controllers import LearnedController, make_controller
from rankrl.env import LoRARankEnv, ObservationMismatchError
from rankrl.policy import FEATURES_FILE, METADATA_FILE, POLICY_FILE, PolicyFileError

# Output bias of the policy's action head (5 actions per group: -step, 0, +step, freeze, thaw): group 0
# prefers +step, group 1 prefers -step.
BIAS = [0.0, 0.0, 3.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]


def save_policy(directory, num_groups: int = 2, features: bool = True, bias: list[float] | None = None):
    """An untrained PPO on the tiny environment, saved with features.json and metadata.json."""
    env = LoRARankEnv(preset="tiny", num_groups=num_groups)
    model = PPO("MlpPolicy", env, seed=0, n_steps=8, batch_size=8, policy_kwargs={"net_arch": [8]}, device="cpu")
    if bias is not None:  # a policy with known preferences: zero weights, so the bias alone decides
        with torch.no_grad():
            model.policy.action_net.weight.zero_()
            model.policy.action_net.bias.copy_(torch.tensor(bias))
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / POLICY_FILE)
    if features:
        (directory / FEATURES_FILE).write_text(json.dumps(env.layout.to_dict()))
    metadata = {"algo": "PPO", "num_groups": num_groups, "r_max": env.config.r_max,
                "rank_step": env.config.rank_step, "actions": env.actions, "env_id": "rankrl/tiny-v1"}
    (directory / METADATA_FILE).write_text(json.dumps(metadata))
    return directory


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return save_policy(tmp_path_factory.mktemp("policy") / "run", bias=BIAS)


def test_learned_acts_deterministically_and_reports_probabilities(make_loop, policy_dir):
    loop = make_loop(budget_frac=1.1)
    controller = make_controller(f"learned:{policy_dir}")
    steps = loop.run(controller, decisions=3)
    top = math.exp(3) / (4 + math.exp(3))
    for s in steps:
        decision = s.applied.decision
        assert decision.action == [2, 0]
        assert [sum(p) for p in decision.probabilities] == pytest.approx([1.0, 1.0])
        rest = (1 - top) / 4
        assert decision.probabilities[0] == pytest.approx([rest, rest, top, rest, rest], rel=1e-5)
        before = s.applied.before
        assert s.applied.requested == [min(before[0] + 2, 8), max(before[1] - 2, 0)]
        assert "g0 +2 (p=0.83)" in decision.reason and "g1 -2 (p=0.83)" in decision.reason
    assert steps[-1].applied.ranks[1] == 0 and steps[-1].applied.ranks[0] > 4
    loop.assert_within_wall()


def test_learned_decision_matches_sb3_predict(make_loop, tmp_path):
    directory = save_policy(tmp_path / "plain")  # an untrained policy, no hand-set preferences
    loop = make_loop(budget_frac=None)
    controller = LearnedController(directory / POLICY_FILE)
    loop.prepare(controller)
    ctx = loop.context()
    predicted, _ = controller.policy.model.predict(ctx.observation, deterministic=True)
    assert controller.decide(ctx).action == predicted.tolist()


def test_policy_for_another_number_of_groups_is_refused_before_training(make_loop, tmp_path):
    directory = save_policy(tmp_path / "g1", num_groups=1)
    loop = make_loop(budget_frac=1.0)
    with pytest.raises(ObservationMismatchError, match=r"trained for 1 layer groups.*num_groups=2"):
        loop.prepare(LearnedController(directory))
    assert loop.session.step == 0


def test_policy_for_another_layout_is_refused(make_loop, tmp_path):
    directory = save_policy(tmp_path / "layout")
    saved = json.loads((directory / FEATURES_FILE).read_text())
    saved["features"] = [name.replace("importance_share", "sensitivity_share") for name in saved["features"]]
    (directory / FEATURES_FILE).write_text(json.dumps(saved))
    with pytest.raises(ObservationMismatchError, match="retrain it"):
        make_loop(budget_frac=None).prepare(LearnedController(directory))


def test_policy_without_features_json_is_checked_by_its_observation_space(make_loop, tmp_path):
    directory = save_policy(tmp_path / "bare", num_groups=1, features=False)
    with pytest.raises(PolicyFileError, match="num_groups=2"):
        make_loop(budget_frac=None).prepare(LearnedController(directory))


def test_missing_or_corrupt_policy_files(tmp_path):
    with pytest.raises(PolicyFileError, match="No policy at"):
        make_controller(f"learned:{tmp_path / 'nowhere'}")
    corrupt = tmp_path / "corrupt" / POLICY_FILE
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a zip at all")
    with pytest.raises(PolicyFileError, match="not a stable-baselines3 zip"):
        LearnedController(corrupt)
    with zipfile.ZipFile(corrupt, "w") as archive:  # a zip, but not a policy
        archive.writestr("data", "{}")
    with pytest.raises(PolicyFileError, match="could not be loaded"):
        LearnedController(corrupt).bind(num_groups=2, split_by_kind=False, r_max=8, rank_step=2, total_steps=None)


def test_deciding_before_bind_says_what_to_call(policy_dir):
    from .helpers import fake_context

    with pytest.raises(RuntimeError, match="bind"):
        LearnedController(policy_dir).decide(fake_context([4, 4]))


def test_freeze_and_thaw_actions_reach_the_decision(make_loop, tmp_path):
    directory = save_policy(tmp_path / "freezer", bias=[0.0, 0.0, 0.0, 3.0, 0.0] * 2)  # every group: freeze
    loop = make_loop(budget_frac=None)
    controller = LearnedController(directory)
    step = loop.run(controller, decisions=1)[0]
    assert step.applied.decision.frozen == [True, True] and step.applied.frozen == [True, True]
    assert loop.session.rl.frozen_groups == [True, True] and step.applied.ranks == step.applied.before


@pytest.mark.parametrize("metadata", [{"env_id": "rankrl/default-v0"}, {"deltas": [-2, 0, 2]}])
def test_a_policy_trained_on_environment_v0_is_one_clear_error(make_loop, tmp_path, metadata):
    directory = save_policy(tmp_path / "v0")
    saved = json.loads((directory / METADATA_FILE).read_text())
    saved.pop("actions")
    saved.pop("env_id")
    (directory / METADATA_FILE).write_text(json.dumps({**saved, **metadata}))
    loop = make_loop(budget_frac=None)
    with pytest.raises(PolicyFileError, match=r"trained on environment v0.*Retrain it: rankrl train --env"):
        loop.prepare(LearnedController(directory))
    assert loop.session.step == 0
