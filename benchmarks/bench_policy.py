"""Is a trained policy better than fixed rank, and how much better could any allocation be?

Runs held-out episodes of an environment preset (seeds 20001.., task ``i mod len(tasks)``, so every task of the
family is covered) with:

* ``fixed``: plain LoRA held at ``rank_init`` (the baseline every figure is paired against);
* static allocations reached in the first decisions and then held (drop the top groups, shift rank to the
  bottom groups, shrink everything), which map how much return the reward has to give around fixed rank;
* every policy given on the command line (deterministic actions).

It prints, per arm, the mean episode return, final accuracy and memory used / budget, and the paired
difference to ``fixed`` in return and accuracy with its standard error over episodes.

Run: ``.venv/bin/python benchmarks/bench_policy.py [--env default] [--episodes 10] [--no-static] [--set KEY=VALUE ..]
RUN_DIR_OR_POLICY_ZIP ...`` (``--set`` overrides preset keys, e.g. ``use_rslora=false``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import datasets
import numpy as np
import torch
import yaml

from rankrl.env import LoRARankEnv
from rankrl.train.episodes import EpisodeSummary, held_out_episodes, run_episode


def static_arms(num_groups: int) -> dict[str, list[list[int]]]:
    """Action scripts (indices into {-step, 0, +step}) played at the first decisions, then held."""
    hold, down, up = 1, 0, 2
    half = num_groups // 2
    top_off = [hold] * half + [down] * (num_groups - half)
    return {
        "top half -step": [top_off],
        "top half to 0": [top_off, top_off],
        "top half to 0, bottom +2 steps": [[up] * half + [down] * (num_groups - half)] * 2,
        "all -step": [[down] * num_groups],
    }


def scripted(actions: list[list[int]], num_groups: int) -> Callable[[], Callable[[np.ndarray], np.ndarray]]:
    """A factory of action functions that play ``actions`` from the start of each episode, then hold."""

    def make() -> Callable[[np.ndarray], np.ndarray]:
        step = iter(actions)
        return lambda _obs: np.array(next(step, [1] * num_groups), dtype=np.int64)

    return make


def policy_arm(path: str, env: LoRARankEnv) -> Callable[[], Callable[[np.ndarray], np.ndarray]]:
    from rankrl.policy import load_policy

    policy = load_policy(path, env.layout).policy
    return lambda: (lambda obs: policy.predict(obs, deterministic=True)[0])


def run_arm(env: LoRARankEnv, make_act, seeds: list[int]) -> list[EpisodeSummary]:
    return [run_episode(env, make_act(), seed, task) for seed, task in held_out_episodes(env.config, seeds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("policies", nargs="*", help="policy directories (policy.json + policy.safetensors)")
    parser.add_argument("--env", default="default")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--no-static", action="store_true", help="only fixed rank and the given policies")
    parser.add_argument("--set", nargs="*", default=[], help="preset overrides KEY=VALUE (YAML values)")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    torch.set_num_threads(1)
    env = LoRARankEnv(preset=args.env, **{k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.set)})
    groups = env.layout.num_groups
    seeds = list(range(20_001, 20_001 + args.episodes))
    arms = {"fixed": scripted([], groups)}
    if not args.no_static:
        arms.update({name: scripted(actions, groups) for name, actions in static_arms(groups).items()})
    arms.update({path: policy_arm(path, env) for path in args.policies})
    print(f"{args.env}: {args.episodes} held-out episodes per arm, paired with fixed rank {env.config.rank_init}")
    print(f"{'arm':40s} {'return':>7s} {'acc':>6s} {'used':>5s}   {'return - fixed':>15s}   {'acc - fixed':>15s}")
    baseline = None
    for name, make_act in arms.items():
        episodes = run_arm(env, make_act, seeds)
        returns = np.array([e.episode_return for e in episodes])
        accuracy = np.array([e.final_accuracy for e in episodes])
        used = np.array([e.mean_used_frac for e in episodes])
        if baseline is None:
            baseline = returns, accuracy
        d_return, d_accuracy = returns - baseline[0], accuracy - baseline[1]
        se = np.sqrt(len(seeds))
        print(f"{name[-40:]:40s} {returns.mean():+7.3f} {accuracy.mean():6.3f} {used.mean():5.2f}   "
              f"{d_return.mean():+.3f} ± {d_return.std(ddof=1) / se if len(seeds) > 1 else 0:.3f}   "
              f"{d_accuracy.mean():+.3f} ± {d_accuracy.std(ddof=1) / se if len(seeds) > 1 else 0:.3f}", flush=True)
    env.close()


if __name__ == "__main__":
    main()
