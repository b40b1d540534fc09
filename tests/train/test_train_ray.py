"""``rankrl train --backend ray``: the episodes and policy of ``--backend subprocess``, a worker killed."""

from __future__ import annotations

import csv
import threading
import time

import pytest
import torch
from stable_baselines3 import PPO

ray = pytest.importorskip("ray", reason="the ray extra is part of the test set-up (make setup installs it)")

from rankrl.train import train_policy  # noqa: E402
from rankrl.train.ray_vec_env import RayVecEnv  # noqa: E402
from tests.processes import tiny_agent  # noqa: E402


def _episodes(run_dir) -> list[tuple[float, int]]:
    """Every finished episode's (return, length), in a canonical order (files differ by backend)."""
    rows = []
    for path in sorted((run_dir / "monitor").glob("*.monitor.csv")):
        lines = path.read_text().splitlines()[1:]
        rows += [(round(float(r["r"]), 5), int(r["l"])) for r in csv.DictReader(lines)]
    return sorted(rows)


def _kill_a_worker_mid_run(out, actors, killed):
    """Kill worker 1 once the first episodes are on record (mid-way through the second ones)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        files = list(out.rglob("workers.monitor.csv"))
        if files and len(files[0].read_text().splitlines()) >= 4 and len(actors) >= 2:
            ray.kill(actors[1])
            killed.set()
            return
        time.sleep(0.2)


def test_ray_backend_trains_the_same_policy_even_when_a_worker_dies(tmp_path, local_ray, monkeypatch):
    agent = tmp_path / "agent.yaml"
    agent.write_text(tiny_agent(checkpoint_freq=1000))
    common = {"env": "tiny", "agent": str(agent), "timesteps": 20, "n_envs": 2, "seed": 3, "progress": False}
    local = train_policy(out=tmp_path / "subprocess", backend="subprocess", **common)

    actors, killed = [], threading.Event()
    original = RayVecEnv._new_actor

    def recording(self, env_fn):
        actor = original(self, env_fn)
        actors.append(actor)
        return actor

    monkeypatch.setattr(RayVecEnv, "_new_actor", recording)
    killer = threading.Thread(
        target=_kill_a_worker_mid_run, args=(tmp_path / "ray", actors, killed), daemon=True
    )
    killer.start()
    with pytest.warns(UserWarning, match="worker 1 died .* retrying its episode"):
        remote = train_policy(out=tmp_path / "ray", backend="ray", **common)
    killer.join(timeout=5)
    assert killed.is_set() and len(actors) == 3  # two workers, one replacement

    assert _episodes(remote) == _episodes(local) and len(_episodes(local)) == 4
    a = PPO.load(local / "policy.zip", device="cpu").policy.state_dict()
    b = PPO.load(remote / "policy.zip", device="cpu").policy.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ray.is_initialized(), "a Ray started by the caller stays up"
