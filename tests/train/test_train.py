"""`rankrl train`: run directories, resolved config, policy files, resume, and bad input."""

from __future__ import annotations

import json

import pytest
from stable_baselines3 import PPO

from rankrl.env import LoRARankEnv
from rankrl.presets import PresetError
from rankrl.train import load_agent_config, train_policy
from tests.processes import tiny_agent


@pytest.fixture(scope="module")
def agent_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("agents") / "quick.yaml"
    path.write_text(tiny_agent(eval_freq=20))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, agent_file):
    out = tmp_path_factory.mktemp("runs")
    return train_policy(env="tiny", agent=str(agent_file), timesteps=20, seed=3, out=out, progress=False), out


def test_run_directory_layout_and_contents(run):
    run_dir, out = run
    assert run_dir == out / "tiny" / "quick_3_1"
    for name in ("config.json", "policy.zip", "best_policy.zip", "features.json", "metadata.json",
                 "evaluations.jsonl", "learning_curve.png", "policy.json", "policy.safetensors",
                 "best_policy.json", "best_policy.safetensors"):
        assert (run_dir / name).stat().st_size > 0, name
    assert list((run_dir / "tb").rglob("events.out.tfevents.*"))
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.zip"))
    assert checkpoints == ["policy_10_steps.zip", "policy_20_steps.zip"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"]["rank_init"] == 4 and config["agent"]["hyperparams"]["n_steps"] == 10
    features = json.loads((run_dir / "features.json").read_text())
    assert features == LoRARankEnv(preset="tiny").layout.to_dict()
    metadata = json.loads((run_dir / "metadata.json").read_text())
    assert metadata["num_groups"] == 2 and metadata["deltas"] == [-2, 0, 2] and metadata["timesteps"] == 20
    evaluations = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]
    # Before the first update, then every ceil(20 / 8) = 3 steps (8 points by default, fewer steps than the
    # preset's eval_freq), the last one after PPO's last update, of the policy that is saved.
    assert [e["timesteps"] for e in evaluations] == [0, 3, 6, 9, 12, 15, 18, 20]
    assert set(evaluations[0]["paired"]) == {"fixed", "static-fit"}
    evaluation = evaluations[-1]
    assert metadata["last_evaluation"] == {k: v for k, v in evaluation.items() if k != "episodes"}
    assert evaluation["advantage"] == pytest.approx(evaluation["policy_return"] - evaluation["fixed_return"])


def test_policy_zip_is_a_plain_sb3_model(run):
    run_dir, _ = run
    model = PPO.load(run_dir / "policy.zip", device="cpu")
    env = LoRARankEnv(preset="tiny")
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)
    assert model.num_timesteps == 20


def test_a_second_run_never_overwrites_the_first(run, agent_file):
    run_dir, out = run
    before = (run_dir / "policy.zip").read_bytes()
    second = train_policy(env="tiny", agent=str(agent_file), timesteps=10, seed=3, out=out, progress=False)
    assert second == out / "tiny" / "quick_3_2"
    assert (run_dir / "policy.zip").read_bytes() == before


def test_resume_continues_from_the_last_checkpoint(run, agent_file, tmp_path):
    import shutil

    run_dir, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "policy.zip").unlink()
    resumed = train_policy(timesteps=30, resume=copy, progress=False)
    assert resumed == copy
    assert PPO.load(copy / "policy.zip", device="cpu").num_timesteps == 30
    assert (copy / "checkpoints" / "policy_30_steps.zip").exists()


def test_bad_input_is_refused_before_anything_is_written(tmp_path, agent_file):
    with pytest.raises(ValueError, match="--timesteps must be a positive"):
        train_policy(env="tiny", agent=str(agent_file), timesteps=0, out=tmp_path)
    with pytest.raises(PresetError, match="Known presets: .*ppo"):
        train_policy(env="tiny", agent="nope", timesteps=10, out=tmp_path)
    with pytest.raises(PresetError, match="Known presets: .*tiny"):
        train_policy(env="nope", timesteps=10, out=tmp_path)
    (tmp_path / "empty").mkdir()
    config = {"env_preset": "tiny", "agent_preset": "ppo", "seed": 0}
    (tmp_path / "empty" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no checkpoints"):
        train_policy(timesteps=10, resume=tmp_path / "empty")
    greedy = tmp_path / "greedy.yaml"
    greedy.write_text(agent_file.read_text().replace("eval_episodes: 1", "eval_episodes: 11"))
    with pytest.raises(ValueError, match="eval_episodes=11 .* has 10 eval_seeds"):
        train_policy(env="tiny", agent=str(greedy), timesteps=10, out=tmp_path)
    assert not (tmp_path / "tiny").exists()


def test_evaluation_is_stratified_over_the_task_family(tmp_path):
    from rankrl.env import load_env_config
    from rankrl.train.callbacks import BaselineEvalCallback

    config = load_env_config("tiny")
    callback = BaselineEvalCallback(config, tmp_path, eval_freq=10, episodes=3)
    assert callback.episodes == [(10_001, config.tasks[0]), (10_002, config.tasks[1]), (10_003, config.tasks[0])]


def test_agent_presets_load_with_env_overrides():
    ppo = load_agent_config("ppo", env_name="tiny")
    assert ppo.algo == "PPO" and ppo.hyperparams.n_steps == 20
    assert load_agent_config("ppo", env_name="default").hyperparams.n_steps == 64
    assert load_agent_config("ppo", env_name="minilm").hyperparams.n_steps == 128
    assert load_agent_config("a2c").algo == "A2C"
    clone = load_agent_config("ppo-clone", env_name="default")
    assert clone.hyperparams.learning_rate == 3e-4 and clone.hyperparams.n_epochs == 4
    assert load_agent_config("ppo-clone", env_name="tiny").hyperparams.n_steps == 20
    # Every shipped agent preset loads for every shipped environment preset.
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    agents = sorted(p.stem for p in (root / "agents").glob("*.yaml"))
    assert {"ppo", "ppo-clone", "a2c"} <= set(agents)
    for agent in agents:
        for env in sorted(p.stem for p in (root / "envs").glob("*.yaml")):
            assert load_agent_config(agent, env_name=env).net_arch


def test_agent_preset_with_a_mistyped_hyperparameter(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("algo: PPO\nhyperparams:\n  n_stpes: 10\n")
    with pytest.raises(PresetError, match="bad.yaml: unknown key hyperparams.n_stpes"):
        load_agent_config(bad)
    bad.write_text("algo: DQN\n")
    with pytest.raises(PresetError, match="algo must be one of PPO, A2C"):
        load_agent_config(bad)


def test_policy_for_another_layout_is_refused_with_the_fix(run, tmp_path):
    from rankrl.env import ObservationLayout, ObservationMismatchError
    from rankrl.policy import PolicyFileError, load_policy

    run_dir, _ = run
    loaded = load_policy(run_dir, ObservationLayout(2))
    assert loaded.metadata["algo"] == "PPO"
    with pytest.raises(ObservationMismatchError, match="trained for 2 layer groups but this run has 4"):
        load_policy(run_dir, ObservationLayout(4))
    features = json.loads((run_dir / "features.json").read_text())
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "policy.zip").write_bytes((run_dir / "policy.zip").read_bytes())
    features["features"] = list(reversed(features["features"]))
    (moved / "features.json").write_text(json.dumps(features))
    with pytest.raises(ObservationMismatchError, match="another order"):
        load_policy(moved, ObservationLayout(2), trust_policy=True)
    (moved / "features.json").unlink()
    with pytest.raises(PolicyFileError, match="observes"):
        load_policy(moved, ObservationLayout(3), trust_policy=True)
    (moved / "policy.zip").write_bytes(b"not a zip")
    with pytest.raises(PolicyFileError, match="not a stable-baselines3 zip"):
        load_policy(moved / "policy.zip", ObservationLayout(2), trust_policy=True)
    with pytest.raises(PolicyFileError, match="No policy at"):
        load_policy(tmp_path / "nowhere", ObservationLayout(2))


def test_warm_start_copies_the_network_and_is_recorded(run, agent_file, tmp_path, monkeypatch):
    import torch

    run_dir, _ = run
    # No update: the saved policy must then be exactly the source's weights.
    monkeypatch.setattr(PPO, "learn", lambda self, *args, **kwargs: self)
    warm = train_policy(env="tiny", agent=str(agent_file), timesteps=1, seed=9, out=tmp_path, progress=False,
                        init_policy=run_dir)
    assert json.loads((warm / "config.json").read_text())["init_policy"] == str(run_dir.resolve())
    source = PPO.load(run_dir / "policy.zip", device="cpu").policy.state_dict()
    copied = PPO.load(warm / "policy.zip", device="cpu").policy.state_dict()
    assert all(torch.equal(source[key], copied[key]) for key in source)


def test_warm_start_from_another_layout_writes_nothing(run, agent_file, tmp_path):
    from rankrl.env import ObservationMismatchError

    run_dir, _ = run
    with pytest.raises(ObservationMismatchError, match="2 layer groups"):
        train_policy(env="default", agent=str(agent_file), timesteps=1, out=tmp_path, init_policy=run_dir)
    assert not any(tmp_path.iterdir())
