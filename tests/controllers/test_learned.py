"""The learned controller: a policy saved as data like ``rankrl train`` saves it, checked against the live run."""

from __future__ import annotations

import json
import math
import zipfile

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.spaces import Box, MultiDiscrete
from stable_baselines3 import PPO

from rankrl.controllers import LearnedController, make_controller
from rankrl.env import LoRARankEnv, ObservationLayout, ObservationMismatchError
from rankrl.env.registration import ENV_VERSION
from rankrl.policy import (
    FEATURES_FILE,
    METADATA_FILE,
    POLICY_FILE,
    SPEC_FILE,
    PolicyFileError,
    save_policy_data,
)

# Output bias of the policy's action head (5 actions per group: -step, 0, +step, freeze, thaw): group 0
# prefers +step, group 1 prefers -step.
BIAS = [0.0, 0.0, 3.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]


class _Spaces(gymnasium.Env):
    """Only the spaces, for building a policy of any layout version (never stepped)."""

    def __init__(self, observation_space, action_space) -> None:
        self.observation_space, self.action_space = observation_space, action_space


def save_policy(directory, num_groups: int = 2, features: bool = True, bias: list[float] | None = None,
                as_zip: bool = False, version: int = ENV_VERSION, watch: int | None = None):
    """An untrained PPO on the tiny environment, saved as data (policy.json + policy.safetensors) or, with
    ``as_zip``, as a bare SB3 zip with features.json and metadata.json, as trained on environment ``version``.

    With ``watch``, group 0 takes ``+step`` exactly when observation feature ``watch`` is positive (else
    every group takes the first action, ``-step``)."""
    env = LoRARankEnv(preset="tiny", num_groups=num_groups)
    low, high = ObservationLayout(num_groups, version).bounds
    nvec = env.action_space.nvec if version >= 3 else env.action_space.nvec[:-1]  # v3 added the plan head
    spaces = _Spaces(Box(low, high, dtype=np.float32), MultiDiscrete(nvec))  # the layout of that version
    if bias is not None and len(bias) == sum(nvec[:num_groups]) < sum(nvec):
        bias = [*bias, *[0.0] * int(nvec[-1])]  # no preference among plans: the first, "none", is the mode
    model = PPO("MlpPolicy", spaces, seed=0, n_steps=8, batch_size=8, policy_kwargs={"net_arch": [8]}, device="cpu")
    if bias is not None:  # a policy with known preferences: zero weights, so the bias alone decides
        with torch.no_grad():
            model.policy.action_net.weight.zero_()
            model.policy.action_net.bias.copy_(torch.tensor(bias))
    if watch is not None:
        with torch.no_grad():
            hidden, head = model.policy.mlp_extractor.policy_net[0], model.policy.action_net
            for layer in (hidden, head):
                layer.weight.zero_()
                layer.bias.zero_()
            hidden.weight[0, watch] = 5.0
            head.weight[2, 0] = 10.0
    directory.mkdir(parents=True, exist_ok=True)
    layout = ObservationLayout(num_groups, version).to_dict()
    metadata = {"algo": "PPO", "num_groups": num_groups, "r_max": env.config.r_max,
                "rank_step": env.config.rank_step, "actions": env.actions, "env_id": f"rankrl/tiny-v{version}"}
    if version >= 3:
        metadata["plans"] = env.plans
    if not as_zip:
        save_policy_data(model, directory, metadata, layout=layout if features else None)
        return directory
    model.save(directory / POLICY_FILE)
    if features:
        (directory / FEATURES_FILE).write_text(json.dumps(layout))
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
        assert decision.action == [2, 0, 0]
        assert [sum(p) for p in decision.probabilities] == pytest.approx([1.0, 1.0, 1.0])
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
    controller = LearnedController(directory / SPEC_FILE)
    loop.prepare(controller)
    ctx = loop.context()
    predicted, _ = controller.policy.policy.predict(ctx.observation, deterministic=True)
    assert controller.decide(ctx).action == predicted.tolist()


def test_data_policy_acts_exactly_like_the_sb3_model_it_was_saved_from(make_loop, tmp_path):
    directory = save_policy(tmp_path / "zip", as_zip=True, bias=BIAS)
    save_policy_data(PPO.load(directory / POLICY_FILE, device="cpu"), tmp_path / "data",
                     json.loads((directory / METADATA_FILE).read_text()),
                     layout=LoRARankEnv(preset="tiny", num_groups=2).layout.to_dict())
    loop = make_loop(budget_frac=None)
    trusted = LearnedController(directory / POLICY_FILE, trust_policy=True)
    data = LearnedController(tmp_path / "data")
    loop.prepare(trusted)
    loop.prepare(data)
    ctx = loop.context()
    assert data.probabilities(ctx.observation) == trusted.probabilities(ctx.observation)


def test_policy_for_another_number_of_groups_is_refused_before_training(make_loop, tmp_path):
    directory = save_policy(tmp_path / "g1", num_groups=1)
    loop = make_loop(budget_frac=1.0)
    with pytest.raises(ObservationMismatchError, match=r"trained for 1 layer groups.*num_groups=2"):
        loop.prepare(LearnedController(directory))
    assert loop.session.step == 0


def test_policy_for_another_layout_is_refused(make_loop, tmp_path):
    directory = save_policy(tmp_path / "layout")
    saved = json.loads((directory / SPEC_FILE).read_text())
    layout = saved["observation_layout"]
    layout["features"] = [name.replace("importance_share", "sensitivity_share") for name in layout["features"]]
    (directory / SPEC_FILE).write_text(json.dumps(saved))
    with pytest.raises(ObservationMismatchError, match="retrain it"):
        make_loop(budget_frac=None).prepare(LearnedController(directory))


@pytest.mark.parametrize("as_zip", [False, True])
def test_policy_without_a_layout_is_checked_by_its_observation_space(make_loop, tmp_path, as_zip):
    directory = save_policy(tmp_path / "bare", num_groups=1, features=False, as_zip=as_zip)
    with pytest.raises(PolicyFileError, match="num_groups=2"):
        make_loop(budget_frac=None).prepare(LearnedController(directory, trust_policy=as_zip))


def test_a_bare_zip_needs_trust_policy_and_says_why(tmp_path):
    directory = save_policy(tmp_path / "zip", as_zip=True)
    with pytest.raises(PolicyFileError, match="can run arbitrary code.*--trust-policy"):
        make_controller(f"learned:{directory}")
    assert LearnedController(directory, trust_policy=True).metadata["r_max"] == 8


def test_missing_or_corrupt_policy_files(tmp_path):
    with pytest.raises(PolicyFileError, match="No policy at"):
        make_controller(f"learned:{tmp_path / 'nowhere'}")
    corrupt = tmp_path / "corrupt" / POLICY_FILE
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a zip at all")
    with pytest.raises(PolicyFileError, match="not a stable-baselines3 zip"):
        LearnedController(corrupt, trust_policy=True)
    with zipfile.ZipFile(corrupt, "w") as archive:  # a zip, but not a policy
        archive.writestr("data", "{}")
    with pytest.raises(PolicyFileError, match="could not be loaded"):
        LearnedController(corrupt, trust_policy=True).bind(num_groups=2, split_by_kind=False, r_max=8, rank_step=2,
                                                           total_steps=None)


def test_damaged_data_policies_are_refused_naming_the_file(tmp_path):
    directory = save_policy(tmp_path / "data")
    spec = json.loads((directory / SPEC_FILE).read_text())
    (directory / SPEC_FILE).write_text("{not json")
    with pytest.raises(PolicyFileError, match=r"policy\.json \(policy spec\) is not valid JSON"):
        LearnedController(directory)
    for key, value, message in (("activation_fn", "os.system", "activation"),
                                ("net_arch", "[64]; import os", "net_arch"),
                                ("features_extractor_class", "Evil", "policy_kwargs may hold only")):
        broken = json.loads(json.dumps(spec))
        broken["policy_kwargs"][key] = value
        (directory / SPEC_FILE).write_text(json.dumps(broken))
        with pytest.raises(PolicyFileError, match=message):
            LearnedController(directory)
    (directory / SPEC_FILE).write_text(json.dumps(spec))
    weights = directory / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # a truncated copy
    controller = LearnedController(directory)
    with pytest.raises(PolicyFileError, match="checksum"):
        controller.bind(num_groups=2, split_by_kind=False, r_max=8, rank_step=2, total_steps=None)


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


def test_a_v1_policy_deploys_on_the_accuracy_where_a_v2_policy_reads_the_gain(make_loop, tmp_path):
    """Both layouts keep their accuracy feature at index 2 (v1 ``eval/accuracy``, v2 ``eval/gain``). At the
    first decision there is one evaluation, so the gain is 0 and the accuracy is not: a policy that moves
    group 0 up only when that feature is positive shows which layout it was given."""
    assert ObservationLayout(2, 1).names[2] == "eval/accuracy" and ObservationLayout(2, 2).names[2] == "eval/gain"
    actions = {}
    for version in (1, 2):
        loop = make_loop(budget_frac=None)
        controller = LearnedController(save_policy(tmp_path / f"v{version}", version=version, watch=2))
        step = loop.run(controller, decisions=1)[0]
        assert controller.layout == ObservationLayout(2, version)
        assert step.ctx.features["eval/accuracy"] > 0 and step.ctx.features["eval/gain"] == 0
        actions[version] = step.applied.decision.action
    assert actions == {1: [2, 0], 2: [0, 0]}


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_policy_cannot_start_training_on_v3(tmp_path, version):
    from rankrl.train.trainer import _load_warm_start

    directory = save_policy(tmp_path / f"v{version}", version=version)
    with pytest.raises(PolicyFileError, match=rf"trained on environment v{version} .*trains v3.*Retrain it"):
        _load_warm_start(directory, LoRARankEnv(preset="tiny", num_groups=2))


def test_the_plan_head_sets_the_first_allocation_and_the_groups_act_after_it(make_loop, tmp_path):
    env = LoRARankEnv(preset="tiny", num_groups=2)
    plan = [0.0] * len(env.plans)
    plan[env.plans.index("top1@2")] = 3.0
    hold = [0.0, 3.0, 0.0, 0.0, 0.0] * 2
    directory = save_policy(tmp_path / "planner", bias=hold + plan)
    loop = make_loop(budget_frac=None)
    controller = LearnedController(directory)
    loop.prepare(controller)
    first = controller.decide(loop.context())  # before the first step, where deployment decides first
    assert first.action == [1, 1, env.plans.index("top1@2")]
    assert first.target_ranks == [0, 2] and first.frozen == [False, False] and "plan top1@2" in first.reason
    later = loop.decide(controller)  # after steps: the same preference, read as "hold"
    assert later.applied.decision.action == first.action and later.applied.requested == later.applied.before
    grow = [0.0, 0.0, 3.0, 0.0, 0.0] * 2  # the plan head's mode is "none": the groups act at the start too
    loop = make_loop(budget_frac=None)
    controller = LearnedController(save_policy(tmp_path / "grower", bias=grow))
    spec = json.loads((directory / SPEC_FILE).read_text())
    spec["metadata"]["plans"][1] = "bottom2@8"  # damaged metadata: refused at set-up, not at the first decision
    (directory / SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(PolicyFileError, match="'bottom2@8' is not a plan for 2 groups.*Re-export it"):
        loop.prepare(LearnedController(directory))
    loop.prepare(controller)
    decision = controller.decide(loop.context())
    assert decision.action == [2, 2, 0] and decision.target_ranks == [6, 6]


@pytest.mark.parametrize("metadata", [{"env_id": "rankrl/default-v0"}, {"deltas": [-2, 0, 2]}])
def test_a_policy_trained_on_environment_v0_is_one_clear_error(make_loop, tmp_path, metadata):
    directory = save_policy(tmp_path / "v0")
    spec = json.loads((directory / SPEC_FILE).read_text())
    spec["metadata"].pop("actions")
    spec["metadata"].pop("env_id")
    spec["metadata"].update(metadata)
    (directory / SPEC_FILE).write_text(json.dumps(spec))
    loop = make_loop(budget_frac=None)
    with pytest.raises(PolicyFileError, match=r"trained on environment v0.*Retrain it: rankrl train --env"):
        loop.prepare(LearnedController(directory))
    assert loop.session.step == 0
