"""Teacher replay: PPO in the teacher's episodes, rewarded against it, easiest first; evaluation paired with rules."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from rankrl.cli import app
from rankrl.env import LoRARankEnv
from rankrl.train.callbacks import paired_difference, read_evaluations
from rankrl.train.imitation import ImitationDataset, collect_teacher_episodes
from rankrl.train.replay import CurriculumCallback, ReplayPlan, TeacherReplay, difficulty
from rankrl.train.teacher import Teacher
from tests.processes import tiny_agent
from tests.train.budgets import moving_budget

runner = CliRunner(env={"COLUMNS": "200"})
TEACHER = "greedy-memory"

@pytest.fixture(scope="module")
def dataset():
    return collect_teacher_episodes(moving_budget(), TEACHER, n_episodes=4, seed=0)


def test_plan_orders_the_teachers_episodes_easiest_first(dataset):
    plan = ReplayPlan.from_dataset(dataset)
    assert sorted(plan.seeds) == sorted(dataset.episode_seeds)
    assert list(plan.difficulties) == sorted(plan.difficulties)
    for seed, rewards in zip(plan.seeds, plan.teacher_rewards, strict=True):
        i = dataset.episode_seeds.index(seed)
        assert sum(rewards) == pytest.approx(dataset.episode_returns[i], abs=1e-5)
        assert difficulty(dataset.episode_budgets[i], dataset.episode_traces[i]) == plan.difficulties[
            plan.seeds.index(seed)]
    assert difficulty(0.5, "constant") == pytest.approx(0.5) and difficulty(0.5, "step-down") == pytest.approx(1.0)
    assert [plan.eligible(level) for level in (0.01, 0.25, 0.5, 1.0)] == [1, 1, 2, 4]
    # Episodes a clone drove (DAgger rows) hold the clone's rewards, not the teacher's: never replayed.
    with pytest.raises(ValueError, match="a clone drove"):
        ReplayPlan.from_dataset(dataclasses.replace(dataset, driver="clone"))


def test_replaying_the_teachers_actions_earns_exactly_the_teachers_rewards(dataset):
    """The reset seed fixes task, run seed, budget and trace: the teacher's actions in a replayed episode get the
    teacher's rewards, so the relative reward is 0 at every decision."""
    plan = ReplayPlan.from_dataset(dataset)
    inner = LoRARankEnv(config=moving_budget())
    env = TeacherReplay(inner, plan)
    teacher = Teacher(TEACHER)
    drawn = set()
    for reset_seed in (0, 1, 2):
        obs, info = env.reset(seed=reset_seed)
        drawn.add(info["replay/episode"])
        assert info["budget_frac"] == pytest.approx(
            dataset.episode_budgets[dataset.episode_seeds.index(plan.seeds[info["replay/episode"]])])
        for _ in range(inner.config.episode_length):
            obs, reward, terminated, truncated, info = env.step(teacher.action(inner))
            assert reward == pytest.approx(0.0, abs=1e-6)
            assert info["reward/environment"] == pytest.approx(info["teacher_reward"], abs=1e-6)
    assert len(drawn) > 1
    absolute = TeacherReplay(LoRARankEnv(config=moving_budget()), ReplayPlan.from_dataset(dataset, relative=False))
    absolute.reset(seed=0)
    _, reward, *_, info = absolute.step(np.asarray([1, 1, 0]))
    assert reward == info["reward/environment"]


def test_the_curriculum_draws_the_easiest_episodes_first(dataset):
    plan = ReplayPlan.from_dataset(dataset)
    env = TeacherReplay(LoRARankEnv(config=moving_budget()), plan, level=0.25)
    assert {env.reset(seed=s)[1]["replay/episode"] for s in range(6)} == {0}
    env.set_level(1.0)
    assert len({env.reset(seed=s)[1]["replay/episode"] for s in range(12)}) > 1
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        env.set_level(0.0)
    callback = CurriculumCallback(1000, start=0.25, ramp=0.5)
    assert [callback.level_at(t) for t in (0, 250, 500, 900)] == [0.25, 0.625, 1.0, 1.0]
    assert CurriculumCallback(1000, ramp=0.0).level_at(0) == 1.0
    with pytest.raises(ValueError, match="A curriculum"):
        CurriculumCallback(1000, start=0.0)


def test_paired_difference_uses_the_benchmark_interval():
    assert paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])["verdict"] == "within noise"
    assert paired_difference([2.0], [1.0]) == {"mean": 1.0, "half_width": None, "verdict": "one seed: no interval"}
    better = paired_difference([1.1, 2.1, 3.2], [1.0, 2.0, 3.0])
    assert better["verdict"] == "better" and better["mean"] == pytest.approx(0.1333, abs=1e-3)
    noisy = paired_difference([1.5, 1.0, 3.0], [1.0, 2.0, 3.0])
    assert noisy["verdict"] == "within noise" and noisy["half_width"] > abs(noisy["mean"])


def test_train_replays_the_teacher_and_evaluates_paired_with_the_rules(tmp_path):
    agent = tmp_path / "quick.yaml"
    agent.write_text(tiny_agent())
    out, data = tmp_path / "runs", tmp_path / "teacher"
    result = runner.invoke(app, ["train", "--env", "tiny", "--agent", str(agent), "--teacher", TEACHER,
                                 "--bc-episodes", "2", "--bc-epochs", "5", "--bc-data", str(data), "--timesteps", "20",
                                 "--eval-points", "2", "--curriculum", "0.5", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    run_dir = out / "tiny" / "quick_0_1"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["replay"] == {"relative_reward": True, "curriculum": 0.5, "curriculum_start": 0.25,
                                "data": str((tmp_path / "teacher.npz").resolve())}
    assert config["eval_points"] == 2 and config["eval_episodes"] == 1
    evaluations = read_evaluations(run_dir)
    # Before the first update (the clone), at 10 steps (ceil(20 / 2)), and at the end.
    assert [e["timesteps"] for e in evaluations] == [0, 10, 20]
    assert all(set(record["paired"]) == {"fixed", "static-fit", TEACHER} for record in evaluations)
    # The evaluation's episodes are the ones cloning was measured on: the teacher there, run again by the
    # callback, returns the same; and before the first update the policy is the clone, with the clone's return.
    held_out = json.loads((run_dir / "metadata.json").read_text())["behaviour_cloning"]["held_out"]
    start = evaluations[0]
    assert start["paired"][TEACHER]["reference_return"] == pytest.approx(np.mean(held_out["teacher_returns"]))
    assert start["policy_return"] == pytest.approx(np.mean(held_out["clone_returns"]))
    dataset = ImitationDataset.load(data)
    assert len(dataset.episode_seeds) == 2 and len(dataset.rewards) == 10
    table = (run_dir / "evaluations.md").read_text().splitlines()
    assert (f"| steps | return | accuracy | memory / budget | return − fixed | accuracy − fixed | "
            f"return − static-fit | accuracy − static-fit | return − {TEACHER} | accuracy − {TEACHER} |") in table
    assert [line.split(" | ")[0] for line in table if line.startswith("| ") and line[2].isdigit()] == \
           ["| 0", "| 10", "| 20"]


def test_replay_options_need_a_teacher(tmp_path):
    out = tmp_path / "runs"
    cases = [(["--curriculum", "0.5"], "goes with --teacher"),
             (["--teacher", TEACHER, "--curriculum", "2"], r"in \[0, 1\]"),
             (["--teacher", TEACHER, "--no-replay", "--curriculum", "0.5"], "goes with --teacher"),
             (["--eval-points", "0"], "must be >= 1")]
    for args, message in cases:
        result = runner.invoke(app, ["train", "--env", "tiny", "--out", str(out), "--timesteps", "10", *args])
        assert result.exit_code == 2 and len(re.findall(message, result.output)) == 1, result.output
    assert not out.exists() or not any(out.rglob("config.json"))
