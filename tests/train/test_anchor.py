"""Teacher anchor: a decaying pull towards the teacher's decisions after each PPO rollout."""

from __future__ import annotations

import json
import math

import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import configure

from rankrl.env import LoRARankEnv
from rankrl.train import train_policy
from rankrl.train.anchor import TeacherAnchor
from rankrl.train.imitation import action_agreement, collect_teacher_episodes
from tests.processes import tiny_agent
from tests.train.budgets import moving_budget

TEACHER = "greedy-memory"


@pytest.fixture(scope="module")
def dataset():
    return collect_teacher_episodes(moving_budget(), TEACHER, n_episodes=4, seed=0)


def anchored(dataset, weight: float = 0.2, half_life: float = math.inf) -> tuple[PPO, TeacherAnchor]:
    model = PPO("MlpPolicy", LoRARankEnv(config=moving_budget()), seed=0, device="cpu", n_steps=16, batch_size=8,
                n_epochs=2, policy_kwargs={"net_arch": [16]})
    model.set_logger(configure(None, []))
    anchor = TeacherAnchor(dataset, weight, half_life, seed=0)
    anchor.init_callback(model)
    return model, anchor


def test_the_weight_halves_every_half_life(dataset):
    _, anchor = anchored(dataset, weight=0.4, half_life=100)
    assert [anchor.weight_at(t) for t in (0, 100, 200)] == [0.4, 0.2, 0.1]
    _, constant = anchored(dataset, weight=0.4)
    assert constant.weight_at(10**6) == 0.4
    # As many steps as PPO's update: 2 epochs x ceil(16 steps x 1 env / batch 8).
    assert anchor.updates_per_rollout() == 4
    for weight, half_life in ((-0.1, 10), (math.nan, 10), (0.1, 0)):
        with pytest.raises(ValueError, match="weight >= 0 and half_life > 0"):
            TeacherAnchor(dataset, weight, half_life)


def test_a_pull_moves_the_policy_towards_the_teachers_actions(dataset):
    model, anchor = anchored(dataset)
    before = action_agreement(model, dataset)
    nll = [anchor.pull(1.0, 40) for _ in range(5)]
    after = action_agreement(model, dataset)
    assert nll == sorted(nll, reverse=True) and nll[-1] < 0.75 * nll[0]
    assert after.groups > before.groups + 0.3
    # The pull steps PPO's own optimizer (one Adam state for both losses).
    assert model.policy.optimizer.state


def test_a_zero_weight_leaves_the_policy_unchanged(dataset):
    model, anchor = anchored(dataset, weight=0.0)
    weights = [p.detach().clone() for p in model.policy.parameters()]
    anchor.on_rollout_end()
    assert anchor.last_nll is None
    assert all(torch.equal(a, b) for a, b in zip(weights, model.policy.parameters(), strict=True))


def test_train_records_the_anchor_and_resumes_with_its_episodes(tmp_path):
    agent = tmp_path / "quick.yaml"
    agent.write_text(tiny_agent())
    data = tmp_path / "teacher"
    run_dir = train_policy(env="tiny", agent=str(agent), timesteps=20, seed=0, out=tmp_path / "runs", progress=False,
                           teacher=TEACHER, bc_episodes=2, bc_epochs=5, bc_data=data, replay=False, anchor=0.5,
                           anchor_half_life=0.25, eval_points=1)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["replay"] is None
    assert config["anchor"] == {"weight": 0.5, "half_life": 5.0, "data": str((tmp_path / "teacher.npz").resolve())}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = EventAccumulator(str(next((run_dir / "tb").glob("quick_*")))).Reload()
    # Logged after each rollout (10 steps): the weight at 10 and 20 steps, halving every 5.
    assert [(s.step, round(s.value, 6)) for s in logs.Scalars("anchor/weight")] == [(10, 0.125), (20, 0.03125)]
    # The episodes are read again from the dataset on resume.
    data.with_suffix(".npz").rename(tmp_path / "moved.npz")
    with pytest.raises(ValueError, match="teacher.npz does not exist"):
        train_policy(resume=run_dir, timesteps=30, progress=False, say=lambda _: None)
    assert json.loads((run_dir / "config.json").read_text()) == config
    (tmp_path / "moved.npz").rename(data.with_suffix(".npz"))
    assert train_policy(resume=run_dir, timesteps=30, progress=False, say=lambda _: None) == run_dir


def test_the_anchor_needs_a_teacher(tmp_path):
    with pytest.raises(ValueError, match="goes with --teacher"):
        train_policy(env="tiny", timesteps=10, out=tmp_path, anchor=0.1, progress=False)
    with pytest.raises(ValueError, match="weight >= 0"):
        train_policy(env="tiny", timesteps=10, out=tmp_path, teacher=TEACHER, anchor=-1.0, progress=False)
    with pytest.raises(ValueError, match="positive fraction"):
        train_policy(env="tiny", timesteps=10, out=tmp_path, teacher=TEACHER, anchor_half_life=0.0, progress=False)
    assert not any(tmp_path.rglob("config.json"))
