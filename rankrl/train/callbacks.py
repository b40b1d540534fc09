"""stable-baselines3 callbacks: rank/memory/reward logging, and evaluation against a fixed-rank baseline."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from rankrl.env import EnvConfig, LoRARankEnv


class RankLoggingCallback(BaseCallback):
    """Record ``rank/*``, ``memory/*``, ``reward/*`` and accuracy from every step's ``info``.

    Values are averaged by the SB3 logger and written by its writers (TensorBoard, stdout) at each dump.
    """

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "ranks" not in info or "accuracy" not in info:
                continue
            for g, rank in enumerate(info["ranks"]):
                self.logger.record_mean(f"rank/group{g}", rank)
            self.logger.record_mean("memory/used_frac", info["memory_used_frac"])
            self.logger.record_mean("memory/wall_hits", float(info["wall_hit"]))
            self.logger.record_mean("train/eval_accuracy", info["accuracy"])
            for g, frozen in enumerate(info.get("frozen", [])):
                self.logger.record_mean(f"frozen/group{g}", float(frozen))
            for key in ("reward/accuracy", "reward/memory", "reward/time", "reward/wall"):
                self.logger.record_mean(key, info[key])
        return True


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


def run_episode(env: LoRARankEnv, act: Callable[[np.ndarray], np.ndarray], seed: int,
                task: str | None = None) -> EpisodeSummary:
    """Run one full episode of ``env`` (episode_length decisions) with the action function ``act``."""
    options = {"task": task} if task else None
    obs, info = env.reset(seed=seed, options=options)
    task_name, total, used, walls, ranks, accuracy = info["task"], 0.0, [], 0, info["ranks"], info["accuracy"]
    for _ in range(env.config.episode_length):
        obs, reward, terminated, truncated, info = env.step(act(obs))
        total += reward
        if info.get("diverged"):
            break
        used.append(info["memory_used_frac"])
        walls += int(info["wall_hit"])
        ranks, accuracy = info["ranks"], info["accuracy"]
        if terminated or truncated:
            break
    return EpisodeSummary(seed, task_name, total, accuracy, float(np.mean(used)) if used else float("nan"),
                          list(ranks), walls)


def hold_action(env: LoRARankEnv) -> Callable[[np.ndarray], np.ndarray]:
    """The fixed-rank baseline: the zero delta for every group (plain LoRA at ``rank_init``)."""
    middle = np.full(env.layout.num_groups, env.config.action_levels // 2, dtype=np.int64)
    return lambda _obs: middle


def held_out_episodes(env_config: EnvConfig, seeds: list[int]) -> list[tuple[int, str]]:
    """``(seed, task)`` per episode, stratified: episode ``i`` runs task ``i mod len(tasks)``, so every task of
    the family is evaluated once there are as many episodes as tasks (a random draw left tasks out and made
    the figure bimodal)."""
    tasks = env_config.tasks
    return [(seed, tasks[i % len(tasks)]) for i, seed in enumerate(seeds)]


def check_eval_episodes(env_config: EnvConfig, episodes: int) -> None:
    """Raise ``ValueError`` when the agent preset asks for more evaluation episodes than the env has seeds."""
    if episodes > len(env_config.eval_seeds):
        raise ValueError(f"eval_episodes={episodes} (agent preset) but environment {env_config.name!r} has "
                         f"{len(env_config.eval_seeds)} eval_seeds; lower eval_episodes or add eval_seeds.")


class BaselineEvalCallback(BaseCallback):
    """Every ``eval_freq`` environment steps, compare the deterministic policy with the fixed-rank baseline.

    Both run the same held-out episodes in a separate, single environment: episode ``i`` uses seed
    ``EnvConfig.eval_seeds[i]`` and task ``i mod len(tasks)`` of the family.
    The baseline is deterministic and is evaluated once. Logs ``eval/policy_return``,
    ``eval/fixed_return``, ``eval/advantage``, ``eval/policy_accuracy``, ``eval/policy_used_frac``; keeps
    ``best_policy.zip`` and appends every evaluation to ``evaluations.jsonl``.

    Args:
        env_config: The training environment's configuration.
        run_dir: Where ``best_policy.zip`` and ``evaluations.jsonl`` go.
        eval_freq: Environment steps (summed over vectorised environments) between evaluations.
        episodes: Number of held-out episodes (at most ``len(env_config.eval_seeds)``).
    """

    def __init__(self, env_config: EnvConfig, run_dir: Path, eval_freq: int, episodes: int, verbose: int = 0):
        super().__init__(verbose)
        self.env_config = env_config
        self.run_dir = Path(run_dir)
        self.eval_freq = eval_freq
        check_eval_episodes(env_config, episodes)
        self.episodes = held_out_episodes(env_config, list(env_config.eval_seeds[:episodes]))
        self.env: LoRARankEnv | None = None
        self.baseline: list[EpisodeSummary] = []
        self.best = -np.inf
        self._next = eval_freq

    def _init_callback(self) -> None:
        self.env = LoRARankEnv(config=self.env_config)
        self.baseline = [run_episode(self.env, hold_action(self.env), seed, task) for seed, task in self.episodes]
        self._next = self.num_timesteps + self.eval_freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.eval_freq
            # The last rollout's evaluation would run before PPO's final update: leave it to the end of training,
            # so the last evaluation (and best_policy.zip) describes the policy that is saved.
            if self.num_timesteps < getattr(self.model, "_total_timesteps", np.inf):
                self.evaluate()
        return True

    def _on_training_end(self) -> None:
        self.evaluate()

    def evaluate(self) -> dict:
        """Run the evaluation now, log it, and return its figures."""

        def act(obs: np.ndarray) -> np.ndarray:
            action, _ = self.model.predict(obs, deterministic=True)
            return action

        episodes = [run_episode(self.env, act, seed, task) for seed, task in self.episodes]
        figures = {
            "timesteps": int(self.num_timesteps),
            "policy_return": float(np.mean([e.episode_return for e in episodes])),
            "fixed_return": float(np.mean([e.episode_return for e in self.baseline])),
            "policy_accuracy": float(np.mean([e.final_accuracy for e in episodes])),
            "fixed_accuracy": float(np.mean([e.final_accuracy for e in self.baseline])),
            "policy_used_frac": float(np.mean([e.mean_used_frac for e in episodes])),
            "fixed_used_frac": float(np.mean([e.mean_used_frac for e in self.baseline])),
        }
        figures["advantage"] = figures["policy_return"] - figures["fixed_return"]
        for key, value in figures.items():
            if key != "timesteps":
                self.logger.record(f"eval/{key}", value)
        record = {**figures, "episodes": [asdict(e) for e in episodes]}
        with (self.run_dir / "evaluations.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if figures["policy_return"] > self.best:
            self.best = figures["policy_return"]
            self.model.save(self.run_dir / "best_policy.zip")
        self.last = figures
        return figures
