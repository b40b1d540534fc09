"""Environment steps per second with and without the prefix cache, on the same episodes, as same-run ratios.

Two environments of one preset, one with ``prefix_cache`` off and one with it on, play the same episodes
(same reset seeds) with the same decisions: a rule teacher's (what PPO starts from after cloning), or
random actions drawn in advance from a seed (the worst case: allocations change every decision). Episodes
alternate between the two, and which one goes first alternates too, so a machine that slows down mid-run
slows both. Time is the process's CPU time (one torch thread), which other jobs on the machine do not
inflate the way they inflate wall time; wall-time rates are printed beside it. It prints env steps/s of each, their
ratio over all episodes and over the second half (a training run plays thousands of episodes, so the cache is warm
almost all of the time), how many steps started above a prefix to cache, and the largest difference between the two
rewards of one decision.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_prefix_cache.py [--preset default] [--episodes 10]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rankrl.env import LoRARankEnv
from rankrl.prefix_cache import base_prefix
from rankrl.train.teacher import Teacher


def play(env: LoRARankEnv, seed: int, policy: str, actions: np.ndarray) -> tuple[float, float, list[float], int]:
    """One episode: ``(CPU seconds in step(), wall seconds, rewards, decisions above a cached prefix)``."""
    teacher = Teacher(policy) if policy != "random" else None
    env.reset(seed=seed)
    seconds, wall, rewards, cached = 0.0, 0.0, [], 0
    for t in range(env.config.episode_length):
        action = teacher.action(env) if teacher is not None else actions[t]
        started, cpu = time.perf_counter(), time.process_time()
        _, reward, terminated, _, _ = env.step(action)
        seconds += time.process_time() - cpu
        wall += time.perf_counter() - started
        rewards.append(reward)
        rl = env.session.rl
        cached += base_prefix(rl.ranks, rl.root, training=True) > 0
        if terminated:
            break
    return seconds, wall, rewards, cached


def compare(preset: str, policy: str, episodes: int) -> None:
    envs = {cache: LoRARankEnv(preset=preset, prefix_cache=cache) for cache in (False, True)}
    size = envs[False].layout.num_groups
    rng = np.random.default_rng(0)
    seconds = {False: [], True: []}
    walls = {False: 0.0, True: 0.0}
    steps = {False: [], True: []}
    gap, cached = 0.0, 0
    for episode in range(episodes):
        per_group = rng.integers(0, envs[False].action_space.nvec[0], (envs[False].config.episode_length, size))
        actions = np.column_stack([per_group, np.zeros(len(per_group), dtype=np.int64)])  # and no plan
        order = (False, True) if episode % 2 == 0 else (True, False)
        rewards = {}
        for cache in order:
            took, wall, rewards[cache], above = play(envs[cache], seed=episode, policy=policy, actions=actions)
            seconds[cache].append(took)
            walls[cache] += wall
            steps[cache].append(len(rewards[cache]))
            cached += above if cache else 0
        gap = max(gap, float(np.max(np.abs(np.subtract(rewards[False], rewards[True])))))
    half = episodes // 2

    def rate(cache: bool, start: int = 0) -> float:
        return sum(steps[cache][start:]) / sum(seconds[cache][start:])

    total = sum(steps[True])
    wall = {cache: sum(steps[cache]) / walls[cache] for cache in walls}
    print(f"{preset:8s} {policy:12s} {rate(False):8.2f} {rate(True):8.2f} {rate(True) / rate(False):7.2f}x "
          f"{rate(True, half) / rate(False, half):7.2f}x {wall[True] / wall[False]:7.2f}x {cached / total:8.0%} "
          f"{gap:10.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--policies", default="static-fit,random")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"env steps per CPU second without and with the prefix cache, {args.episodes} episodes each, torch "
          "threads 1 (warm: the second half of the episodes; wall: the ratio in wall time)")
    print(f"{'preset':8s} {'decisions':12s} {'off':>8s} {'on':>8s} {'ratio':>8s} {'warm':>8s} {'wall':>8s} "
          f"{'cached':>8s} {'reward gap':>10s}")
    for policy in args.policies.split(","):
        compare(args.preset, policy, args.episodes)


if __name__ == "__main__":
    main()
