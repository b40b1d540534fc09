"""Environment efficiency and vectorised throughput, as same-run ratios.

1. Efficiency: wall time of an environment step divided by the time of its K training steps plus its
   evaluation (the work the step exists for). Target <= 1.05. Reported for the `default` preset (the one
   policies are trained on) and the `minilm` preset.
2. Throughput of 2 subprocess environments (one torch thread each) against 1 environment (two threads),
   in environment steps per second, on the `default` preset.

Run: ``.venv/bin/python bench/bench_env.py``
"""

from __future__ import annotations

import sys
import time

import datasets
import numpy as np
import torch

from rankrl.env import LoRARankEnv, load_env_config


def efficiency(preset: str, steps: int) -> tuple[float, float]:
    env = LoRARankEnv(preset=preset)
    env.reset(seed=0)
    env.step(env.action_space.sample())  # warm-up
    total = work = 0.0
    done = 0
    while done < steps:
        _, _, terminated, _, _ = env.step(env.action_space.sample())
        total += env.last_timing["step"]
        work += env.last_timing["train_eval"]
        done += 1
        if terminated or env._t >= env.config.episode_length:
            env.reset()
    env.close()
    return total / work, total / done


def throughput(n_envs: int, steps: int) -> float:
    from rankrl.train.trainer import _vec_env

    config = load_env_config("default")
    vec = _vec_env(config, n_envs, seed=0, monitor_dir=None)
    vec.reset()
    rng = np.random.default_rng(0)
    vec.step(rng.integers(0, config.action_levels, (n_envs, config.num_action_groups)))
    started = time.perf_counter()
    for _ in range(steps // n_envs):
        vec.step(rng.integers(0, config.action_levels, (n_envs, config.num_action_groups)))
    rate = (steps // n_envs) * n_envs / (time.perf_counter() - started)
    vec.close()
    return rate


def main() -> None:
    datasets.disable_progress_bars()
    torch.set_num_threads(2)
    quick = "--quick" in sys.argv
    for preset, steps in (("default", 24 if quick else 64), ("minilm", 4 if quick else 12)):
        ratio, seconds = efficiency(preset, steps)
        print(f"{preset:8s} env step / (K train steps + eval) = {ratio:.3f}  (target <= 1.05; "
              f"{seconds * 1000:.0f} ms per step, for scale only)")
    one, two = throughput(1, 24 if quick else 64), throughput(2, 24 if quick else 64)
    print(f"default  steps/s with --n-envs 2 / --n-envs 1 = {two / one:.2f}")


if __name__ == "__main__":
    main()
