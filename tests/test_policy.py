"""Policies are data: safetensors + JSON round trip, and a malicious SB3 zip runs nothing on any load path."""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import zipfile

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from typer.testing import CliRunner

import rankrl.policy
from rankrl.cli import app
from rankrl.env import LoRARankEnv
from rankrl.policy import (
    SPEC_FILE,
    WEIGHTS_FILE,
    PolicyFileError,
    load_policy,
    load_policy_data,
    save_policy_data,
)
from tests.controllers.test_learned import save_policy

runner = CliRunner(env={"COLUMNS": "200"})
TINY = ["--model", "tiny", "--rank", "4", "--num-groups", "2", "--batch-size", "8", "--max-length", "32",
        "--eval-size", "48", "--no-progress"]
DATA = "synthetic:keyword?n_train=128&n_eval=48"


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def make_malicious_zip(directory, marker, features: bool = True):
    """A working tiny-env PPO zip whose SB3 ``data`` carries a pickled payload (as a hostile sender would)."""
    directory.mkdir(parents=True, exist_ok=True)
    save_policy(directory, as_zip=True, features=features)
    path = directory / "policy.zip"
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    payload = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    data["observation_space"] = {":type:": "<class 'gymnasium.spaces.box.Box'>", ":serialized:": payload}
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return directory


@pytest.fixture
def hostile(tmp_path):
    marker = tmp_path / "PWNED"
    return make_malicious_zip(tmp_path / "hostile", marker), marker


def test_the_crafted_zip_really_runs_code_when_sb3_loads_it(hostile):
    directory, marker = hostile
    with pytest.raises(ValueError):  # the payload runs first; SB3 then chokes on its return value
        PPO.load(directory / "policy.zip", device="cpu")  # what any unpickling loader does
    assert marker.exists()


def test_data_round_trip_keeps_weights_spaces_and_metadata(tmp_path):
    env = LoRARankEnv(preset="tiny", num_groups=2)
    model = PPO("MlpPolicy", env, seed=0, n_steps=8, batch_size=8, device="cpu",
                policy_kwargs={"net_arch": {"pi": [8, 4], "vf": [6]}, "activation_fn": torch.nn.ReLU})
    metadata = {"env_id": "rankrl/tiny-v3", "deltas": [-2, 0, 2], "anything": {"nested": [1, 2]}}
    spec_path = save_policy_data(model, tmp_path, metadata, layout=env.layout.to_dict())
    loaded = load_policy_data(tmp_path)
    assert loaded.path == spec_path and loaded.metadata == metadata
    assert loaded.features == env.layout.to_dict()
    assert loaded.action_space == env.action_space and loaded.observation_space == env.observation_space
    spec = json.loads(spec_path.read_text())
    assert spec["policy_kwargs"]["activation_fn"] == "ReLU"
    assert spec["action_space"]["nvec"] == env.action_space.nvec.tolist()
    assert spec["observation_layout"]["features"] == env.layout.names
    saved, rebuilt = model.policy.state_dict(), loaded.policy.state_dict()
    assert saved.keys() == rebuilt.keys() and all(torch.equal(saved[k], rebuilt[k]) for k in saved)
    obs = np.stack([env.observation_space.sample() for _ in range(16)])
    assert np.array_equal(model.predict(obs, deterministic=True)[0], loaded.policy.predict(obs, deterministic=True)[0])
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic writes left no temporary file


def test_weights_of_another_architecture_are_refused(tmp_path):
    save_policy(tmp_path / "a")
    spec = json.loads((tmp_path / "a" / SPEC_FILE).read_text())
    spec["policy_kwargs"]["net_arch"] = [16]
    (tmp_path / "a" / SPEC_FILE).write_text(json.dumps(spec))
    with pytest.raises(PolicyFileError, match="do not fit the recorded architecture"):
        load_policy_data(tmp_path / "a")


def test_convert_needs_trust_and_gives_the_same_policy(tmp_path):
    source = save_policy(tmp_path / "zip", as_zip=True)
    refused = runner.invoke(app, ["policy", "convert", str(source / "policy.zip"), str(tmp_path / "data")])
    assert refused.exit_code == 2 and "--trust-policy" in refused.output
    assert not (tmp_path / "data").exists()
    result = runner.invoke(app, ["policy", "convert", "--trust-policy", str(source), str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    loaded = load_policy(tmp_path / "data")
    assert loaded.metadata["env_id"] == "rankrl/tiny-v3" and loaded.features["num_groups"] == 2
    model = PPO.load(source / "policy.zip", device="cpu")
    assert all(torch.equal(v, loaded.policy.state_dict()[k]) for k, v in model.policy.state_dict().items())
    again = runner.invoke(app, ["policy", "convert", "--trust-policy", str(source), str(tmp_path / "data")])
    assert again.exit_code == 2 and "never overwrites" in again.output


def test_the_shipped_default_is_data():
    directory = rankrl.policy.shipped_policy("default")
    assert (directory / SPEC_FILE).exists() and (directory / WEIGHTS_FILE).exists()
    assert not (directory / "policy.zip").exists()
    loaded = load_policy("default")
    assert loaded.metadata["r_max"] == 16 and loaded.features["num_groups"] == 4


# ---------------------------------------------------------------------------------------------- every load path
@pytest.mark.parametrize("features", [True, False])
def test_finetune_learned_refuses_the_zip_and_runs_nothing(tmp_path, features):
    marker = tmp_path / "PWNED"
    directory = make_malicious_zip(tmp_path / "hostile", marker, features=features)
    for spec in (f"learned:{directory}", f"learned:{directory / 'policy.zip'}"):
        result = runner.invoke(app, ["finetune", *TINY, "--data", DATA, "--controller", spec, "--steps", "4",
                                     "--out", str(tmp_path / "run")])
        assert result.exit_code == 2 and "can run arbitrary code" in result.output, result.output
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_bench_learned_refuses_the_zip_and_runs_nothing(hostile, tmp_path):
    directory, marker = hostile
    result = runner.invoke(app, ["bench", *TINY, "--tasks", DATA, "--controllers", f"fixed:4,learned:{directory}",
                                 "--seeds", "1", "--steps", "4", "--out", str(tmp_path / "bench")])
    assert result.exit_code == 2 and "--trust-policy" in result.output, result.output
    assert not marker.exists() and not (tmp_path / "bench").exists()


def test_init_policy_refuses_the_zip_and_runs_nothing(hostile, tmp_path):
    from rankrl.train import train_policy

    directory, marker = hostile
    with pytest.raises(PolicyFileError, match="--trust-policy"):
        train_policy(env="tiny", timesteps=10, out=tmp_path / "runs", init_policy=directory, progress=False)
    result = runner.invoke(app, ["train", "--env", "tiny", "--timesteps", "10", "--out", str(tmp_path / "runs"),
                                 "--init-policy", str(directory / "policy.zip"), "--no-progress"])
    assert result.exit_code == 2 and "can run arbitrary code" in result.output
    assert not marker.exists() and not (tmp_path / "runs" / "tiny").exists()


def test_explain_does_not_load_the_zip_a_run_names(hostile, tmp_path):
    directory, marker = hostile
    data_policy = save_policy(tmp_path / "data")
    run = tmp_path / "run"
    result = runner.invoke(app, ["finetune", *TINY, "--data", DATA, "--controller", f"learned:{data_policy}",
                                 "--steps", "8", "--every", "4", "--out", str(run)])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    config["controller_spec"] = f"learned:{directory / 'policy.zip'}"  # a run directory someone sent
    (run / "config.json").write_text(json.dumps(config))
    shown = runner.invoke(app, ["explain", str(run)])
    assert shown.exit_code == 0, shown.output
    assert "saliency skipped" in shown.output and "--trust-policy" in shown.output
    explicit = runner.invoke(app, ["explain", str(run), "--policy", str(directory)])
    assert explicit.exit_code == 2 and "can run arbitrary code" in explicit.output
    assert not marker.exists()


def test_a_shipped_folder_with_only_a_zip_is_not_a_policy(hostile, tmp_path, monkeypatch):
    directory, marker = hostile
    shipped = tmp_path / "shipped"
    shutil.copytree(directory, shipped / "default")
    monkeypatch.setattr(rankrl.policy, "shipped_policy_dirs", lambda: [shipped])
    result = runner.invoke(app, ["finetune", *TINY, "--data", DATA, "--controller", "learned", "--steps", "4",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "No shipped policy named 'default'" in result.output
    save_policy_data(PPO("MlpPolicy", LoRARankEnv(preset="tiny", num_groups=2), device="cpu",
                         policy_kwargs={"net_arch": [8]}), shipped / "default", {"deltas": [-2, 0, 2]},
                     layout=LoRARankEnv(preset="tiny", num_groups=2).layout.to_dict())
    loaded = load_policy("default")  # the data beside the zip; the zip is never opened
    assert loaded.path == shipped / "default" / SPEC_FILE
    assert not marker.exists()
