"""Evaluation episodes: one full episode under an action function, the fixed-rank baseline's action, and the
held-out ``(seed, task)`` list, shared by the training callback and ``benchmarks/bench_policy.py``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rankrl.env import EnvConfig, LoRARankEnv


@dataclass
class EpisodeSummary:
    """One evaluation episode."""

    seed: int
    task: str
    episode_return: float
    final_accuracy: float
    mean_used_frac: float
    final_ranks: list[int]
    wall_hits: int
    rewards: list[float] = field(default_factory=list)
    budget_frac: float = float("nan")
    trace: str = ""


def run_episode(env: LoRARankEnv, act: Callable[[np.ndarray], np.ndarray], seed: int,
                task: str | None = None) -> EpisodeSummary:
    """Run one full episode of ``env`` (episode_length decisions) with the action function ``act``."""
    options = {"task": task} if task else None
    obs, info = env.reset(seed=seed, options=options)
    task_name, ranks, accuracy = info["task"], info["ranks"], info["accuracy"]
    budget_frac, trace = float(info["budget_frac"]), str(info["trace"].get("name", ""))
    rewards: list[float] = []
    used, walls = [], 0
    for _ in range(env.config.episode_length):
        obs, reward, terminated, truncated, info = env.step(act(obs))
        rewards.append(float(reward))
        if info.get("diverged"):
            break
        used.append(info["memory_used_frac"])
        walls += int(info["wall_hit"])
        ranks, accuracy = info["ranks"], info["accuracy"]
        if terminated or truncated:
            break
    return EpisodeSummary(seed, task_name, float(sum(rewards)), accuracy,
                          float(np.mean(used)) if used else float("nan"), list(ranks), walls, rewards, budget_frac,
                          trace)


def hold_action(env: LoRARankEnv) -> Callable[[np.ndarray], np.ndarray]:
    """The fixed-rank baseline: the zero delta for every group and no plan (plain LoRA at ``rank_init``)."""
    hold = env.hold
    return lambda _obs: hold


def held_out_episodes(env_config: EnvConfig, seeds: list[int]) -> list[tuple[int, str]]:
    """``(seed, task)`` per episode, stratified: episode ``i`` runs task ``i mod len(tasks)``, so every task of
    the family is evaluated once there are as many episodes as tasks (a random draw can leave tasks out and
    make the mean depend on which ones)."""
    tasks = env_config.tasks
    return [(seed, tasks[i % len(tasks)]) for i, seed in enumerate(seeds)]


def check_eval_episodes(env_config: EnvConfig, episodes: int) -> None:
    """Raise ``ValueError`` when the agent preset asks for more evaluation episodes than the env has seeds."""
    if episodes > len(env_config.eval_seeds):
        raise ValueError(f"eval_episodes={episodes} (agent preset) but environment {env_config.name!r} has "
                         f"{len(env_config.eval_seeds)} eval_seeds; lower eval_episodes or add eval_seeds.")
