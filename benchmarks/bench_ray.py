"""``--backend ray`` against ``--backend subprocess``, and what more machines would give.

1. Env steps per second of 2 Ray actors / 2 SB3 subprocess workers on the ``default`` preset (random
   actions, one torch thread per worker), measured in alternating blocks in the same run. Target >= 0.90
   (Ray's overhead at most 10%).
2. The inputs of a throughput model, measured here: the seconds of one worker's env step under Ray
   (``t_w``), the driver's cost per worker per vectorised step (``c``: Ray round trips, measured on
   CartPole, whose step costs microseconds), and the driver's PPO update time per collected sample (``u``:
   the ``ppo`` agent preset for ``default``, on a stand-in env with the same spaces). A vectorised step over
   W workers collects W samples in ``t_w + c * W`` and costs ``u * W`` of update later, so the expected
   rate is ``W / (t_w + (c + u) * W)`` env steps per second.

Run: ``.venv/bin/python benchmarks/bench_ray.py [--quick]``
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import datasets
import gymnasium as gym
import numpy as np
import torch

from rankrl.env import load_env_config
from rankrl.train.trainer import _vec_env

MACHINES = (1, 4, 16)
CORES_PER_MACHINE = 2
"""The projection assumes machines like the one measured: 2 cores, one environment worker per core."""


def rate(vec, config, steps: int, rng) -> float:
    """Env steps per second over ``steps`` vectorised steps (after the caller's warm-up)."""
    started = time.perf_counter()
    for _ in range(steps):
        vec.step(rng.integers(0, config.action_levels, (vec.num_envs, config.num_action_groups)))
    return steps * vec.num_envs / (time.perf_counter() - started)


def backend_ratio(blocks: int, steps: int) -> tuple[float, float, float]:
    """``(median ray rate, median subprocess rate, ratio)`` at 2 workers, in alternating blocks."""
    config = load_env_config("default")
    rng = np.random.default_rng(0)
    envs = {
        backend: _vec_env(config, 2, seed=0, monitor_dir=None, backend=backend)
        for backend in ("subprocess", "ray")
    }
    for vec in envs.values():  # warm-up: the first steps of a worker fill its caches
        vec.reset()
        rate(vec, config, 2, rng)
    rates = {backend: [] for backend in envs}
    for _ in range(blocks):
        for backend, vec in envs.items():
            rates[backend].append(rate(vec, config, steps, rng))
    for vec in envs.values():
        vec.close()
    for backend, values in rates.items():
        print(f"  {backend:10s} blocks: " + ", ".join(f"{v:.3f}" for v in values) + " env steps/s")
    ray_rate, sub_rate = statistics.median(rates["ray"]), statistics.median(rates["subprocess"])
    return ray_rate, sub_rate, ray_rate / sub_rate


def driver_cost(steps: int) -> float:
    """Seconds the driver spends per worker per vectorised step under Ray (CartPole: no work in the step)."""
    from stable_baselines3.common.env_util import make_vec_env

    from rankrl.train.ray_vec_env import RayVecEnv

    vec = make_vec_env(lambda: gym.make("CartPole-v1"), n_envs=2, seed=0, vec_env_cls=RayVecEnv)
    vec.reset()
    actions = np.zeros(2, dtype=np.int64)
    for _ in range(20):
        vec.step(actions)
    started = time.perf_counter()
    for _ in range(steps):
        vec.step(actions)
    seconds = (time.perf_counter() - started) / steps / 2
    vec.close()
    return seconds


class SpacesOnly(gym.Env):
    """The ``default`` preset's observation and action spaces with free steps: times PPO's update alone."""

    def __init__(self, observation_space, action_space, length: int) -> None:
        self.observation_space, self.action_space, self.length = observation_space, action_space, length

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        return self.observation_space.sample(), 0.0, self.t >= self.length, False, {}


def update_cost() -> float:
    """Seconds of the driver's PPO update per collected sample (``ppo`` preset, ``default`` spaces)."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rankrl.env import LoRARankEnv
    from rankrl.presets import to_mapping
    from rankrl.train import load_agent_config

    config = load_env_config("default")
    spec = LoRARankEnv(config=config)
    agent = load_agent_config("ppo", env_name=config.name)
    vec = DummyVecEnv(
        [lambda: SpacesOnly(spec.observation_space, spec.action_space, config.episode_length)] * 2
    )
    hyper = to_mapping(agent.hyperparams)
    model = agent.algorithm_class()(
        agent.policy,
        vec,
        seed=0,
        device="cpu",
        verbose=0,
        policy_kwargs={"net_arch": agent.net_arch},
        **hyper,
    )
    samples = hyper["n_steps"] * 2
    model.learn(samples)  # warm-up
    started = time.perf_counter()
    model.learn(2 * samples, reset_num_timesteps=False)
    return (time.perf_counter() - started) / (2 * samples)


def main() -> None:
    import ray

    datasets.disable_progress_bars()
    torch.set_num_threads(1)
    quick = "--quick" in sys.argv
    os.environ.setdefault("RAY_worker_niceness", "0")  # as rankrl.cluster.connect_ray starts a local Ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray_rate, sub_rate, ratio = backend_ratio(blocks=2 if quick else 3, steps=4 if quick else 8)
    print(
        f"default  env steps/s, 2 workers: ray {ray_rate:.2f}, subprocess {sub_rate:.2f}; "
        f"ray / subprocess = {ratio:.3f} (target >= 0.90)"
    )
    cost = driver_cost(100 if quick else 400)
    ray.shutdown()
    step = 2 / ray_rate  # seconds of one vectorised step at 2 workers = t_w + 2c (no update inside)
    t_w = step - 2 * cost
    update = update_cost()
    print(
        f"measured: t_w = {t_w * 1000:.0f} ms per worker env step, c = {cost * 1000:.2f} ms driver cost per "
        f"worker and step, u = {update * 1000:.2f} ms PPO update per sample"
    )
    print("| machines | workers | expected env steps/s | per worker | vs 1 machine |")
    print("|---:|---:|---:|---:|---:|")
    one = None
    for machines in MACHINES:
        workers = machines * CORES_PER_MACHINE
        expected = workers / (t_w + (cost + update) * workers)
        one = one or expected
        print(
            f"| {machines} | {workers} | {expected:.2f} | {expected / workers:.3f} | {expected / one:.1f}x |"
        )


if __name__ == "__main__":
    main()
