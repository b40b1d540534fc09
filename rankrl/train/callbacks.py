"""stable-baselines3 callbacks: rank/memory/reward logging, and evaluation paired with rule controllers."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from rankrl.env import EnvConfig, LoRARankEnv
from rankrl.train.episodes import (
    EpisodeSummary,
    check_eval_episodes,
    held_out_episodes,
    hold_action,
    run_episode,
)


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


def read_evaluations(run_dir: Path) -> list[dict]:
    """The records of ``evaluations.jsonl`` (a half-written last line is skipped)."""
    path = Path(run_dir) / "evaluations.jsonl"
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "policy_return" in record:
            records.append(record)
    return records


def paired_difference(policy: list[float], reference: list[float]) -> dict:
    """Policy minus reference over the same episodes, with the benchmark reports' interval and verdict
    (:func:`rankrl.bench.stats.paired_values`): ``mean``, ``half_width`` (``2 sd / sqrt(n)``; ``None`` for one
    episode) and ``verdict``."""
    from rankrl.bench.stats import paired_values

    result = paired_values("policy", "reference", [float(p) - float(r) for p, r in zip(policy, reference, strict=True)])
    return {"mean": result.mean, "half_width": result.half_width, "verdict": result.verdict}


def controller_action(env: LoRARankEnv, spec: str) -> Callable[[np.ndarray], np.ndarray]:
    """A rule controller's actions in ``env`` (:class:`rankrl.train.teacher.Teacher`), as an action function."""
    from rankrl.train.teacher import Teacher

    teacher = Teacher(spec)
    return lambda _obs: teacher.action(env)


class BaselineEvalCallback(BaseCallback):
    """Evaluate the deterministic policy on fixed held-out episodes, paired with rule controllers on the same ones.

    At the start of training (the cloned or initial policy), every ``eval_freq`` environment steps and at the
    end, the policy runs the same held-out episodes in a separate, single environment: episode ``i`` uses seed
    ``EnvConfig.eval_seeds[i]`` and task ``i mod len(tasks)`` of the family (the seed also fixes the budget
    and the trace). The references run the same episodes once (they are deterministic): the fixed-rank
    baseline (``fixed``, the zero delta everywhere) and each controller of ``references`` (for example the
    teacher and ``static-fit``). Each evaluation logs ``eval/policy_return``, ``eval/fixed_return``,
    ``eval/advantage``, ``eval/policy_accuracy``, ``eval/policy_used_frac`` and, per reference,
    ``eval/vs_<name>/return`` and ``eval/vs_<name>/accuracy`` (paired mean differences, with
    :func:`paired_difference`'s interval in ``evaluations.jsonl``); it keeps ``best_policy.zip`` and appends
    the evaluation to ``evaluations.jsonl``.

    Args:
        env_config: The training environment's configuration.
        run_dir: Where ``best_policy.zip`` and ``evaluations.jsonl`` go.
        eval_freq: Environment steps (summed over vectorised environments) between evaluations.
        episodes: Number of held-out episodes (at most ``len(env_config.eval_seeds)``).
        references: Rule controller specs to pair the policy with, besides the fixed rank.
    """

    def __init__(self, env_config: EnvConfig, run_dir: Path, eval_freq: int, episodes: int, verbose: int = 0,
                 on_best: Callable | None = None, references: list[str] | None = None):
        super().__init__(verbose)
        self.on_best = on_best
        self.env_config = env_config
        self.run_dir = Path(run_dir)
        self.eval_freq = eval_freq
        check_eval_episodes(env_config, episodes)
        self.episodes = held_out_episodes(env_config, list(env_config.eval_seeds[:episodes]))
        self.references = list(dict.fromkeys(references or []))
        self.env: LoRARankEnv | None = None
        self.baselines: dict[str, list[EpisodeSummary]] = {}
        # The best score so far: kept across resumes (evaluations.jsonl holds every earlier evaluation).
        earlier = read_evaluations(self.run_dir)
        self.best = max((e["policy_return"] for e in earlier), default=-np.inf)
        self._evaluated_start = bool(earlier)
        self._next = eval_freq

    def _init_callback(self) -> None:
        self.env = LoRARankEnv(config=self.env_config)
        arms = {"fixed": hold_action(self.env), **{spec: controller_action(self.env, spec) for spec in self.references}}
        self.baselines = {name: [run_episode(self.env, act, seed, task) for seed, task in self.episodes]
                          for name, act in arms.items()}
        self._next = self.model.num_timesteps + self.eval_freq  # a resumed run starts past 0

    def _on_training_start(self) -> None:
        # The starting point of the curve (the cloned policy, with a teacher); a resumed run has it already.
        if not self._evaluated_start:
            self._evaluated_start = True
            self.evaluate()

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.eval_freq
            # The last rollout's evaluation would run before PPO's final update: leave it to the end of training,
            # so the last evaluation (and best_policy.zip) describes the policy that is saved.
            if self.num_timesteps < getattr(self.model, "_total_timesteps", np.inf):
                self.evaluate()
        return True

    def _on_training_end(self) -> None:
        from rankrl import interrupt

        if interrupt.requested() is None:  # a stop request leaves at once; the resumed run evaluates
            self.evaluate()

    def evaluate(self) -> dict:
        """Run the evaluation now, log it, and return its figures."""

        def act(obs: np.ndarray) -> np.ndarray:
            action, _ = self.model.predict(obs, deterministic=True)
            return action

        episodes = [run_episode(self.env, act, seed, task) for seed, task in self.episodes]
        fixed = self.baselines["fixed"]
        figures = {
            "timesteps": int(self.num_timesteps),
            "policy_return": float(np.mean([e.episode_return for e in episodes])),
            "fixed_return": float(np.mean([e.episode_return for e in fixed])),
            "policy_accuracy": float(np.mean([e.final_accuracy for e in episodes])),
            "fixed_accuracy": float(np.mean([e.final_accuracy for e in fixed])),
            "policy_used_frac": float(np.mean([e.mean_used_frac for e in episodes])),
            "fixed_used_frac": float(np.mean([e.mean_used_frac for e in fixed])),
        }
        figures["advantage"] = figures["policy_return"] - figures["fixed_return"]
        for key, value in figures.items():
            if key != "timesteps":
                self.logger.record(f"eval/{key}", value)
        paired = {}
        for name, runs in self.baselines.items():
            paired[name] = {
                "return": paired_difference([e.episode_return for e in episodes], [e.episode_return for e in runs]),
                "accuracy": paired_difference([e.final_accuracy for e in episodes], [e.final_accuracy for e in runs]),
                "reference_return": float(np.mean([e.episode_return for e in runs])),
                "reference_accuracy": float(np.mean([e.final_accuracy for e in runs])),
            }
            for metric in ("return", "accuracy"):
                self.logger.record(f"eval/vs_{name}/{metric}", paired[name][metric]["mean"])
        record = {**figures, "paired": paired, "episodes": [asdict(e) for e in episodes]}
        with (self.run_dir / "evaluations.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if figures["policy_return"] > self.best:
            self.best = figures["policy_return"]
            if self.on_best is not None:
                self.on_best(self.model)
            else:
                self.model.save(self.run_dir / "best_policy.zip")
        self.last = {**figures, "paired": paired}
        return figures
