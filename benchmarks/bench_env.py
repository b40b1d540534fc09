"""Environment efficiency and vectorised throughput, as same-run ratios.

1. Efficiency: wall time of an environment step divided by the time of its K training steps plus its
   evaluation (the work the step exists for). Target <= 1.05. Reported for the `default` preset (the one
   policies are trained on) and the `minilm` preset, under random actions (the worst case for the
   caches of measured memory figures), separately for the first steps of a worker and for the rest.
2. Throughput of 2 subprocess environments (one torch thread each) against 1 environment (two threads),
   in environment steps per second, on the `default` preset.

Run: ``.venv/bin/python benchmarks/bench_env.py``
"""

from __future__ import annotations

import sys
import time

import datasets
import numpy as np
import torch

from rankrl.env import LoRARankEnv, load_env_config


def efficiency(preset: str, steps: int, cold: int) -> tuple[float, float, float]:
    """``(ratio over the first `cold` steps, ratio over the rest, seconds per step)`` under random actions.

    Memory readings are cached per task and live set (and per crossing) for the life of the worker, so the first
    steps of a run pay for more measured forward passes than the thousands that follow.
    """
    env = LoRARankEnv(preset=preset)
    env.reset(seed=0)
    env.step(env.action_space.sample())  # warm-up
    totals, works = [], []
    while len(totals) < steps:
        _, _, terminated, _, _ = env.step(env.action_space.sample())
        totals.append(env.last_timing["step"])
        works.append(env.last_timing["train_eval"])
        if terminated or env._t >= env.config.episode_length:
            env.reset()
    env.close()
    first = sum(totals[:cold]) / sum(works[:cold])
    rest = sum(totals[cold:]) / sum(works[cold:]) if steps > cold else float("nan")
    return first, rest, sum(totals) / steps


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
    runs = (("default", 64 if quick else 256, 16 if quick else 64), ("minilm", 8 if quick else 200, 4 if quick else 60))
    for preset, steps, cold in runs:
        first, rest, seconds = efficiency(preset, steps, cold)
        later = f"; steps {cold + 1}-{steps}: {rest:.3f}" if steps > cold else ""
        print(f"{preset:8s} env step / (K train steps + eval), random actions: first {cold} steps {first:.3f}{later}  "
              f"(target <= 1.05; {seconds * 1000:.0f} ms per step, for scale only)")
    one, two = throughput(1, 24 if quick else 64), throughput(2, 24 if quick else 64)
    print(f"default  steps/s with --n-envs 2 / --n-envs 1 = {two / one:.2f}")


if __name__ == "__main__":
    main()
