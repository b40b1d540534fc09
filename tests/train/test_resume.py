"""``rankrl train --resume``: the run's own target, whole history, atomic checkpoints with fallback."""

from __future__ import annotations

import json
import shutil

import pytest
from stable_baselines3 import PPO

from rankrl import interrupt
from rankrl.train import train_policy
from rankrl.train.trainer import CheckpointEvery
from tests.processes import TINY_AGENT


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    path = tmp_path_factory.mktemp("agent") / "quick.yaml"
    path.write_text(TINY_AGENT)
    return path


def stop_after(monkeypatch, timesteps: int) -> None:
    """Request a stop (as Ctrl-C does) once training has passed ``timesteps``."""
    original = CheckpointEvery._on_step

    def on_step(self):
        if self.num_timesteps >= timesteps:
            interrupt.request()
        return original(self)

    monkeypatch.setattr(CheckpointEvery, "_on_step", on_step)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, agent):
    """A 40-step run stopped at step 20, then resumed without --timesteps."""
    out = tmp_path_factory.mktemp("runs")
    monkeypatch = pytest.MonkeyPatch()
    stop_after(monkeypatch, 20)
    try:
        with pytest.raises(interrupt.Interrupted, match="at 20 of 40 steps.*rankrl train --resume"):
            train_policy(env="tiny", agent=str(agent), timesteps=40, seed=1, out=out, progress=False)
    finally:
        interrupt.clear()
        monkeypatch.undo()
    run_dir = out / "tiny" / "quick_1_1"
    before = {"monitor": (run_dir / "monitor" / "0.monitor.csv").read_text(),
              "checkpoints": sorted(p.name for p in (run_dir / "checkpoints").glob("*.zip"))}
    # An earlier evaluation that nothing can beat: the resumed leg must not replace best_policy.*.
    (run_dir / "evaluations.jsonl").write_text(json.dumps({"timesteps": 10, "policy_return": 1e9}) + "\n")
    (run_dir / "best_policy.zip").write_bytes(b"the best so far")
    messages = []
    assert train_policy(resume=run_dir, progress=False, say=messages.append) == run_dir
    return run_dir, before, messages


def test_resume_trains_to_the_run_s_own_target_and_records_it(interrupted):
    run_dir, before, _ = interrupted
    assert before["checkpoints"] == ["policy_10_steps.zip", "policy_20_steps.zip"]
    assert PPO.load(run_dir / "policy.zip", device="cpu").num_timesteps == 40
    config = json.loads((run_dir / "config.json").read_text())
    assert config["timesteps"] == 40 and config["resumed"] == [{"from_timesteps": 20, "target": 40}]
    assert json.loads((run_dir / "metadata.json").read_text())["timesteps"] == 40
    assert json.loads((run_dir / "policy.json").read_text())["metadata"]["timesteps"] == 40


def test_resume_keeps_the_history_and_the_best_score(interrupted):
    run_dir, before, _ = interrupted
    monitor = run_dir / "monitor"
    assert (monitor / "0.leg1.monitor.csv").read_text() == before["monitor"]  # the first leg, untouched
    assert (monitor / "0.monitor.csv").exists()
    evaluations = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]
    # The resumed leg evaluates every ceil(40 / 8) = 5 steps from where it starts, and at the end.
    assert [e["timesteps"] for e in evaluations] == [10, 25, 30, 35, 40]
    assert (run_dir / "best_policy.zip").read_bytes() == b"the best so far"
    assert not list(run_dir.rglob("*.partial.zip")) and not list(run_dir.rglob(".*.tmp-*"))


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(interrupted, tmp_path):
    run_dir, _, _ = interrupted
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    for path in (copy / "checkpoints").glob("*.zip"):
        if path.name not in ("policy_10_steps.zip", "policy_20_steps.zip"):
            path.unlink()
    newest = copy / "checkpoints" / "policy_20_steps.zip"
    newest.write_bytes(newest.read_bytes()[:100])  # what a kill during a non-atomic save leaves
    messages = []
    train_policy(resume=copy, timesteps=30, progress=False, say=messages.append)
    assert any("policy_20_steps.zip is unusable" in m for m in messages), messages
    config = json.loads((copy / "config.json").read_text())
    assert config["resumed"][-1] == {"from_timesteps": 10, "target": 30}
    assert PPO.load(copy / "policy.zip", device="cpu").num_timesteps == 30


def test_checkpoint_every_sets_the_interval(agent, tmp_path):
    run_dir = train_policy(env="tiny", agent=str(agent), timesteps=20, out=tmp_path, progress=False,
                           checkpoint_every=5)
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.zip")) == [
        "policy_10_steps.zip", "policy_15_steps.zip", "policy_20_steps.zip", "policy_5_steps.zip"]
    assert json.loads((run_dir / "config.json").read_text())["checkpoint_every"] == 5
    with pytest.raises(ValueError, match="--checkpoint-every must be a positive"):
        train_policy(env="tiny", agent=str(agent), timesteps=20, out=tmp_path, checkpoint_every=0)


def test_resume_refuses_a_finetune_directory(tmp_path):
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "config.json").write_text(json.dumps({"command": "finetune", "model": "tiny"}))
    with pytest.raises(ValueError, match="is a rankrl finetune run, not a `rankrl train` run"):
        train_policy(resume=tmp_path / "ft")
    (tmp_path / "ft" / "config.json").write_text("{junk")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        train_policy(resume=tmp_path / "ft")


def test_a_bad_env_preset_leaves_no_run_directory(agent, tmp_path):
    from rankrl.env import load_env_config
    from rankrl.presets import find_preset

    env = tmp_path / "broken.yaml"
    env.write_text(find_preset("envs", "tiny").read_text().replace("model: tiny", "model: ./no/such/model"))
    assert load_env_config(env).model == "./no/such/model"  # the file itself is valid
    with pytest.raises(Exception, match="no/such/model"):
        train_policy(env=str(env), agent=str(agent), timesteps=10, out=tmp_path / "runs", progress=False)
    assert not any((tmp_path / "runs").rglob("config.json"))


def test_a_run_trained_on_environment_v0_is_refused_and_left_as_it_was(tmp_path):
    from typer.testing import CliRunner

    from rankrl.cli import app

    run_dir = tmp_path / "old"
    (run_dir / "checkpoints").mkdir(parents=True)
    config = {"command": "train", "env_preset": "tiny", "agent_preset": "ppo", "seed": 0, "timesteps": 40,
              "env_id": "rankrl/tiny-v0"}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "checkpoints" / "policy_20_steps.zip").write_bytes(b"a v0 checkpoint")
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["train", "--resume", str(run_dir)])
    assert result.exit_code == 2
    assert "was trained on rankrl/tiny-v0; this rankrl trains environment v3" in result.output
    assert "Start a new run: rankrl train --env tiny" in result.output and "Traceback" not in result.output
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
