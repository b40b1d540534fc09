"""Behaviour cloning: teachers in the environment, imitation datasets, cloning, and `rankrl train --teacher`."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from stable_baselines3 import PPO
from typer.testing import CliRunner

from rankrl.cli import app
from rankrl.env import LoRARankEnv, ObservationLayout, ObservationMismatchError, load_env_config
from rankrl.env.plans import NO_PLAN, plan_ranks
from rankrl.policy import load_policy
from rankrl.train import train_policy
from rankrl.train.imitation import (
    ImitationDataset,
    action_agreement,
    collect_teacher_episodes,
    compare_returns,
    episode_counter,
    episode_seeds,
    fit_behaviour_cloning,
    merge_datasets,
    resolve_env_config,
)
from rankrl.train.teacher import TEACHERS, Teacher, TeacherError, nearest_action
from tests.train.budgets import moving_budget

runner = CliRunner(env={"COLUMNS": "200"})
TEACHER = "greedy-memory"  # grows, shrinks and holds on this budget range: more than one action to learn

AGENT = """\
algo: PPO
net_arch: [16]
hyperparams:
  n_steps: 10
  batch_size: 10
  n_epochs: 2
eval_freq: 20
eval_episodes: 1
checkpoint_freq: 10
"""


@pytest.fixture(scope="module")
def dataset():
    return collect_teacher_episodes(moving_budget(), TEACHER, n_episodes=4, seed=0)


@pytest.fixture(scope="module")
def agent_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("agents") / "quick.yaml"
    path.write_text(AGENT)
    return path


def untrained_model(seed: int = 0) -> PPO:
    return PPO("MlpPolicy", LoRARankEnv(preset="tiny"), seed=seed, device="cpu", policy_kwargs={"net_arch": [16]})


# ---------------------------------------------------------------------- teachers
def test_teacher_sees_exactly_the_observation_the_policy_sees():
    env = LoRARankEnv(config=moving_budget())
    teacher = Teacher("autofreeze")
    obs, _ = env.reset(seed=3)
    for _ in range(env.config.episode_length):
        ctx = teacher.context(env)
        assert np.array_equal(ctx.observation, obs)
        assert ctx.group_ranks == env.session.rl.group_ranks and ctx.budget is env.budget
        action = teacher.action(env)
        assert env.action_space.contains(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    env.close()


def test_nearest_action_maps_an_allocation_to_the_action_grid():
    env = LoRARankEnv(preset="tiny")  # actions -2, +0, +2, freeze, thaw; r_max 8
    actions, deltas = env.actions, env.deltas

    def near(ranks, frozen, targets, wanted=None):
        return nearest_action(actions, deltas, 8, ranks, frozen, targets, wanted).tolist()

    assert near([4, 4], [False, False], [4, 4]) == [1, 1]  # hold
    assert near([4, 4], [False, False], [0, 8]) == [0, 2]  # a larger jump: one step towards it
    assert near([4, 4], [False, False], [5, 3]) == [1, 1]  # ties go to holding
    assert near([8, 0], [False, False], [20, -3]) == [1, 1]  # targets clipped into [0, r_max]
    assert near([4, 4], [False, False], [4, 4], [True, False]) == [3, 1]  # freeze
    assert near([4, 4], [True, True], [4, 0], [False, True]) == [4, 0]  # thaw; a frozen group shrinks by a delta
    assert near([0, 4], [False, False], [0, 4], [True, False]) == [1, 1]  # nothing to freeze at rank 0


def test_a_teacher_takes_a_first_allocation_of_the_grid_by_its_plan():
    env = LoRARankEnv(preset="tiny", budget_frac=0.6, traces=["constant"])
    env.reset(seed=0)
    teacher = Teacher("static-fit")
    action = teacher.action(env)
    plan = env.plans[action[-1]]
    assert plan != NO_PLAN and action[:-1].tolist() == env.hold[:-1].tolist()  # the groups hold
    _, _, _, _, info = env.step(action)
    assert info["ranks"] == plan_ranks(plan, 2) and not info["wall_hit"]
    assert teacher.action(env).tolist() == env.hold.tolist()  # after the start: holds, and no plan
    env.close()


def test_a_teacher_must_be_a_rule_controller():
    for spec in ("nope", "learned", "learned:default", "importance:no_such_option=1"):
        with pytest.raises(TeacherError, match="Known teachers: .*greedy-memory, static-fit, autofreeze") as err:
            Teacher(spec)
        assert "learned" not in str(err.value).split("Known teachers:")[1]
    assert "learned" not in TEACHERS and {"autofreeze", "greedy-memory", "static-fit", "importance"} <= set(TEACHERS)
    assert Teacher(" importance:target_rank=2 ").spec == "importance:target_rank=2"


def test_environment_by_preset_id_or_config():
    assert resolve_env_config("rankrl/tiny-v3") == resolve_env_config("tiny") == load_env_config("tiny")
    for old in ("rankrl/tiny-v0", "rankrl/tiny-v1", "rankrl/tiny-v2"):
        with pytest.raises(ValueError, match="environment v3; use rankrl/tiny-v3"):
            resolve_env_config(old)


def test_collection_keeps_the_held_out_seeds_out():
    config = load_env_config("tiny")
    seeds = episode_seeds(0, 50, list(config.eval_seeds))
    assert len(set(seeds)) == 50 and not set(seeds) & set(config.eval_seeds)
    assert seeds == episode_seeds(0, 50, list(config.eval_seeds)) and seeds != episode_seeds(1, 50, [])


# ---------------------------------------------------------------------- datasets
def test_dataset_holds_every_decision_of_every_episode(dataset):
    env = LoRARankEnv(config=moving_budget())
    assert len(dataset) == 4 * env.config.episode_length
    assert dataset.observations.shape == (len(dataset), len(env.feature_names))
    assert dataset.actions.shape == (len(dataset), 3) and env.action_space.contains(dataset.actions[0])
    assert dataset.plan_names == env.plans and dataset.num_groups == 2
    assert np.unique(dataset.episode_ids).tolist() == [0, 1, 2, 3]
    assert dataset.teacher == TEACHER and dataset.env_id == "rankrl/tiny-v3" and len(dataset.episode_returns) == 4
    # Each row keeps the reward of its action; an episode's rewards add up to its return.
    for episode, episode_return in enumerate(dataset.episode_returns):
        assert dataset.rewards[dataset.episode_ids == episode].sum() == pytest.approx(episode_return, abs=1e-5)
    assert len(dataset.episode_budgets) == len(dataset.episode_traces) == 4
    assert all(0.7 <= b <= 1.0 for b in dataset.episode_budgets)
    assert set(dataset.episode_traces) <= {"constant", "step-down"}
    assert len(np.unique(dataset.actions)) > 1, "the teacher should do more than hold on binding budgets"
    dataset.check(env.layout, env.actions, plans=env.plans)


def test_dataset_round_trip_without_pickle(dataset, tmp_path):
    path = dataset.save(tmp_path / "teacher")
    assert path == tmp_path / "teacher.npz" and (tmp_path / "teacher.json").is_file()
    with np.load(path, allow_pickle=False) as arrays:
        assert sorted(arrays.files) == ["actions", "episode_ids", "observations", "rewards"]
    loaded = ImitationDataset.load(tmp_path / "teacher.json")
    for name in ("observations", "actions", "episode_ids", "rewards"):
        assert np.array_equal(getattr(loaded, name), getattr(dataset, name))
    for name in ("env_id", "feature_names", "action_names", "teacher", "seed", "episode_seeds", "episode_returns",
                 "episode_budgets", "episode_traces", "driver", "plan_names"):
        assert getattr(loaded, name) == getattr(dataset, name), name
    meta = json.loads((tmp_path / "teacher.json").read_text())
    (tmp_path / "teacher.json").write_text(json.dumps({**meta, "format": 1}))
    with pytest.raises(ValueError, match="format 1, without the per-step rewards .* collect it again"):
        ImitationDataset.load(tmp_path / "teacher")
    (tmp_path / "teacher.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="not a rankrl imitation dataset"):
        ImitationDataset.load(tmp_path / "teacher")
    with pytest.raises(ValueError, match="does not exist"):
        ImitationDataset.load(tmp_path / "missing")


def test_dataset_from_another_layout_is_refused(dataset):
    with pytest.raises(ObservationMismatchError, match="2 layer groups .* has 4. Collect it again"):
        dataset.check(ObservationLayout(4))
    shuffled = ImitationDataset(dataset.observations, dataset.actions, dataset.episode_ids, dataset.rewards,
                                dataset.env_id,
                                list(reversed(dataset.feature_names)), dataset.action_names, dataset.teacher,
                                plan_names=dataset.plan_names)
    with pytest.raises(ObservationMismatchError, match="same features in another order"):
        shuffled.check(ObservationLayout(2))
    with pytest.raises(ObservationMismatchError, match="actions"):
        dataset.check(ObservationLayout(2), ["-4", "+0", "+4", "freeze", "thaw"])
    with pytest.raises(ObservationMismatchError, match="collected with 9 plans .* has 5. Collect it again"):
        dataset.check(ObservationLayout(2), dataset.action_names, plans=dataset.plan_names[:5])


# ---------------------------------------------------------------------- DAgger
def cut_everything(env: LoRARankEnv):
    """A driver that cuts every group by one rank step at every decision (the teacher never does this)."""
    return lambda _obs: np.zeros(env.layout.num_groups + 1, dtype=np.int64)  # -step everywhere, no plan


def test_a_dagger_round_labels_the_states_the_driver_reaches(dataset):
    config = moving_budget()
    env = LoRARankEnv(config=config)
    taught = collect_teacher_episodes(config, TEACHER, n_episodes=2, seed=5, driver=cut_everything(env),
                                      avoid=dataset.episode_seeds)
    assert taught.driver == "clone" and len(taught) == 2 * config.episode_length
    assert not set(taught.episode_seeds) & set(dataset.episode_seeds + list(config.eval_seeds))
    # The driver acted: every group reaches rank 0 after rank_init / rank_step cuts.
    rank_features = [i for i, name in enumerate(taught.feature_names) if name.endswith("/rank_frac")]
    first = taught.observations[taught.episode_ids == 0]
    assert first[0, rank_features].min() > 0 and first[-1, rank_features].max() == 0
    # The labels are the teacher's decisions in exactly those states: replay the episode and ask it.
    teacher = Teacher(TEACHER)
    obs, _ = env.reset(seed=taught.episode_seeds[0])
    for row in range(config.episode_length):
        assert np.allclose(obs, first[row])
        assert np.array_equal(teacher.action(env), taught.actions[row])
        obs, *_ = env.step(np.zeros(env.layout.num_groups + 1, dtype=np.int64))
    # Rewards are the driver's: an episode's rewards add up to its return.
    assert taught.rewards[taught.episode_ids == 1].sum() == pytest.approx(taught.episode_returns[1], abs=1e-5)


def test_merging_datasets_renumbers_episodes_and_names_mixed_drivers(dataset):
    clone_rows = ImitationDataset(dataset.observations[:5], dataset.actions[:5], np.zeros(5), dataset.rewards[:5],
                                  dataset.env_id, dataset.feature_names, dataset.action_names, dataset.teacher,
                                  episode_seeds=[7], episode_returns=[0.1], episode_budgets=[0.8],
                                  episode_traces=["constant"], driver="clone", plan_names=dataset.plan_names)
    merged = merge_datasets([dataset, clone_rows])
    assert len(merged) == len(dataset) + 5 and merged.driver == "mixed"
    assert np.unique(merged.episode_ids).tolist() == [0, 1, 2, 3, 4]
    assert merged.episode_seeds == dataset.episode_seeds + [7]
    assert merge_datasets([dataset]).driver == "teacher"
    other = ImitationDataset(dataset.observations, dataset.actions, dataset.episode_ids, dataset.rewards,
                             dataset.env_id, dataset.feature_names, dataset.action_names, "autofreeze",
                             plan_names=dataset.plan_names)
    with pytest.raises(ValueError, match="Cannot merge"):
        merge_datasets([dataset, other])
    with pytest.raises(ValueError, match="Nothing to merge"):
        merge_datasets([])


# ---------------------------------------------------------------------- cloning
def test_cloning_raises_agreement_far_above_the_untrained_policy(dataset):
    model = untrained_model()
    before = action_agreement(model, dataset)
    result = fit_behaviour_cloning(model, dataset, epochs=100, batch_size=16, lr=3e-3, seed=0)
    after = action_agreement(model, dataset)
    assert result.losses[-1] < 0.5 * result.losses[0]
    # Observed over collection seeds 0-2 x policy seeds 0-3: 0.0-0.45 before (one arbitrary action nearly
    # everywhere), 0.875-1.0 after, a gain of at least 0.475.
    assert after.groups >= 0.85 and after.decisions >= 0.7
    assert after.groups - before.groups >= 0.4
    again = untrained_model()
    fit_behaviour_cloning(again, dataset, epochs=100, batch_size=16, lr=3e-3, seed=0)
    assert action_agreement(again, dataset) == after  # deterministic for a seed


def test_cloning_refuses_a_dataset_for_another_action_space(dataset):
    wide = ImitationDataset(dataset.observations, dataset.actions + 5, dataset.episode_ids, dataset.rewards,
                            dataset.env_id,
                            dataset.feature_names, dataset.action_names, dataset.teacher, plan_names=dataset.plan_names)
    with pytest.raises(ValueError, match="do not fit the policy's action space"):
        fit_behaviour_cloning(untrained_model(), wide, epochs=1)


def test_held_out_comparison_runs_both_on_the_same_episodes(dataset):
    model = untrained_model()
    fit_behaviour_cloning(model, dataset, epochs=100, batch_size=16, seed=0)
    comparison = compare_returns(model, TEACHER, moving_budget(), episodes=2)
    assert [seed for seed, _ in comparison.episodes] == [10_001, 10_002]
    assert len(comparison.teacher_returns) == len(comparison.clone_returns) == 2
    assert comparison.agreement.rows == 2 * moving_budget().episode_length
    assert comparison.difference == pytest.approx(comparison.clone_return - comparison.teacher_return)
    # Episodes are fixed by their seed (task, budget and trace): run again, the same figures.
    again = compare_returns(model, TEACHER, moving_budget(), seeds=[10_001])
    assert again.teacher_returns == comparison.teacher_returns[:1]
    assert again.clone_returns == comparison.clone_returns[:1]


# ---------------------------------------------------------------------- rankrl train --teacher
def test_cli_clone_only_writes_a_loadable_policy(tmp_path, agent_file):
    out, data = tmp_path / "runs", tmp_path / "data" / "static"
    result = runner.invoke(app, ["train", "--env", "tiny", "--agent", str(agent_file), "--teacher", "static-fit",
                                 "--bc-episodes", "2", "--bc-epochs", "20", "--bc-data", str(data), "--timesteps", "0",
                                 "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    run_dir = out / "tiny" / "quick_0_1"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["teacher"] == "static-fit" and config["bc_episodes"] == 2 and config["timesteps"] == 0
    cloning = json.loads((run_dir / "metadata.json").read_text())["behaviour_cloning"]
    assert cloning["teacher"] == "static-fit" and cloning["episodes"] == 2 and cloning["decisions"] == 10
    assert cloning["agreement_after"]["groups"] > cloning["agreement_before"]["groups"]
    held_out = cloning["held_out"]
    assert len(held_out["teacher_returns"]) == len(held_out["clone_returns"]) == 1
    assert list((run_dir / "tb" / "bc").glob("events.out.tfevents.*"))
    assert ImitationDataset.exists(data)
    env = LoRARankEnv(preset="tiny")
    loaded = load_policy(run_dir, env.layout)  # policy.json + safetensors, no unpickling
    assert loaded.metadata["behaviour_cloning"]["teacher"] == "static-fit"
    model = PPO.load(run_dir / "policy.zip", device="cpu")
    obs, _ = env.reset(seed=0)
    assert env.action_space.contains(model.predict(obs, deterministic=True)[0])
    dataset = ImitationDataset.load(data)
    assert action_agreement(model, dataset).groups == pytest.approx(cloning["agreement_after"]["groups"])

    # The dataset is reused: its teacher is taken, nothing is collected, and another teacher is refused.
    again = runner.invoke(app, ["train", "--env", "tiny", "--agent", str(agent_file), "--bc-data", str(data),
                                "--bc-epochs", "5", "--timesteps", "0", "--out", str(out), "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "collecting" not in again.output
    reused = json.loads((out / "tiny" / "quick_0_2" / "metadata.json").read_text())["behaviour_cloning"]
    assert reused["teacher"] == "static-fit" and reused["data"] == str((tmp_path / "data" / "static.npz").resolve())
    other = runner.invoke(app, ["train", "--env", "tiny", "--agent", str(agent_file), "--bc-data", str(data),
                                "--teacher", "autofreeze", "--timesteps", "0", "--out", str(out)])
    assert other.exit_code == 2 and "holds episodes of teacher 'static-fit'" in other.output
    assert sorted(p.name for p in (out / "tiny").iterdir()) == ["quick_0_1", "quick_0_2"]


def test_cli_dagger_rounds_label_the_clones_own_states(tmp_path, agent_file):
    out = tmp_path / "runs"
    result = runner.invoke(app, ["train", "--env", "tiny", "--agent", str(agent_file), "--teacher", "greedy-memory",
                                 "--bc-episodes", "2", "--bc-epochs", "20", "--dagger-rounds", "2",
                                 "--dagger-episodes", "1", "--timesteps", "0", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "DAgger round 2/2" in result.output
    run_dir = out / "tiny" / "quick_0_1"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dagger_rounds"] == 2 and config["dagger_episodes"] == 1
    cloning = json.loads((run_dir / "metadata.json").read_text())["behaviour_cloning"]
    rounds = cloning["dagger"]
    assert [r["round"] for r in rounds] == [1, 2] and [r["rows"] for r in rounds] == [15, 20]
    visited = ImitationDataset.load(run_dir / "dagger_episodes")
    assert visited.driver == "clone" and len(visited) == 10 and visited.teacher == "greedy-memory"
    teacher = ImitationDataset.load(run_dir / "teacher_episodes")
    assert teacher.driver == "teacher" and not set(visited.episode_seeds) & set(teacher.episode_seeds)
    # The final clone was fitted on the teacher's rows and the clone's own, both labelled by the teacher.
    model = PPO.load(run_dir / "policy.zip", device="cpu")
    assert action_agreement(model, merge_datasets([teacher, visited])).groups >= 0.8
    # A clone-driven dataset is no teacher's episodes: it cannot be cloned from as such, nor replayed.
    refused = runner.invoke(app, ["train", "--env", "tiny", "--agent", str(agent_file), "--bc-data",
                                  str(run_dir / "dagger_episodes"), "--timesteps", "0", "--out", str(out)])
    assert refused.exit_code == 2 and "a clone drove" in refused.output


def test_bad_cloning_input_creates_no_run_directory(tmp_path, agent_file):
    out = tmp_path / "runs"
    foreign = ImitationDataset(np.zeros((3, len(ObservationLayout(4).names))), np.zeros((3, 4)), np.zeros(3),
                               np.zeros(3), "rankrl/default-v2", ObservationLayout(4).names,
                               ["-4", "+0", "+4", "freeze", "thaw"], "autofreeze")
    foreign.save(tmp_path / "foreign")
    (tmp_path / "half.npz").write_bytes(b"")
    cases = [
        (["--teacher", "nope"], "Known teachers"),
        (["--teacher", "learned:default"], "is a learned policy"),
        (["--bc-data", str(tmp_path / "foreign")], "collected for 4 layer groups but this run has"),
        (["--bc-data", str(tmp_path / "nothing")], "give --teacher NAME to collect it there"),
        (["--bc-data", str(tmp_path / "half"), "--teacher", "autofreeze"], "only .*half.npz exists"),
        (["--bc-episodes", "3"], "go with --teacher"),
        (["--dagger-rounds", "1"], "--dagger-rounds and --dagger-episodes go with --teacher"),
        (["--teacher", "autofreeze", "--dagger-rounds", "-1"], "--dagger-rounds must be >= 0"),
        (["--teacher", "autofreeze", "--dagger-rounds", "1", "--dagger-episodes", "0"], "--dagger-episodes >= 1"),
        (["--teacher", "autofreeze", "--bc-epochs", "0"], "must be >= 1"),
        (["--teacher", "autofreeze", "--resume", str(tmp_path)], "does not go with|a resumed run"),
    ]
    for flags, message in cases:
        result = runner.invoke(app, ["train", "--env", "tiny", "--agent", str(agent_file), "--timesteps", "0",
                                     "--out", str(out), *flags])
        assert result.exit_code == 2, (flags, result.output)
        assert re.search(message, result.output), (flags, result.output)
    assert not out.exists()
    with pytest.raises(TeacherError):
        train_policy(env="tiny", agent=str(agent_file), timesteps=0, out=out, teacher="fixd")
    assert not out.exists()


def test_ppo_continues_from_the_clone(tmp_path, agent_file):
    run_dir = train_policy(env="tiny", agent=str(agent_file), timesteps=10, seed=1, out=tmp_path, progress=False,
                           teacher="autofreeze", bc_episodes=1, bc_epochs=5)
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["timesteps"] == 10 and metadata["last_evaluation"] is not None
    assert metadata["behaviour_cloning"]["decisions"] == 5
    assert (run_dir / "teacher_episodes.npz").is_file() and (run_dir / "learning_curve.png").is_file()


def test_a_stop_while_collecting_keeps_nothing(tmp_path, agent_file):
    from rankrl import interrupt

    interrupt.request()
    try:
        with pytest.raises(interrupt.Interrupted, match="collecting the teacher's episodes; nothing was kept"):
            train_policy(env="tiny", agent=str(agent_file), timesteps=0, out=tmp_path, progress=False,
                         teacher="autofreeze", bc_episodes=2)
    finally:
        interrupt.clear()
    assert not any((tmp_path / "tiny").iterdir())


def test_a_collection_says_how_far_it_is_about_ten_times():
    said: list[str] = []
    progress = episode_counter(said.append, "teacher episodes")
    for done in range(1, 41):
        progress(done, 40)
    assert said == [f"  teacher episodes: {done}/40" for done in range(4, 41, 4)]
    said.clear()
    for done in range(1, 4):
        progress(done, 3)
    assert said == ["  teacher episodes: 1/3", "  teacher episodes: 2/3", "  teacher episodes: 3/3"]
    said.clear()
    for done in range(1, 13):
        progress(done, 12)
    assert said == [f"  teacher episodes: {done}/12" for done in (2, 4, 6, 8, 10, 12)]
