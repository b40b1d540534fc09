"""Teacher replay: PPO trains on the teacher's own episodes, easiest first, rewarded against the teacher.

Two things make PPO on :class:`~rankrl.env.LoRARankEnv` slow to learn, and both come from the episode, not the
policy. An episode's return is mostly its task and budget (one synthetic task gains 0.3 accuracy in an
episode, another 0.02; a budget of 0.35 of the reference forces cuts that 1.0 never does), so the return of
a good action in a hard episode can be lower than that of a bad action in an easy one. And a policy that
starts under the tightest budgets and moving traces hits the wall before it has learned to hold.

* **Rewards against the teacher.** The imitation dataset keeps the teacher's reward at every decision of
  every episode, and the reset seed of each episode fixes its task, run seed, budget and trace. Replaying an
  episode from its seed puts the policy in the teacher's episode; its reward at decision ``t`` becomes
  ``r_t - r_t^teacher``. The subtracted term depends on the episode and on ``t`` only, never on an
  action, so it changes no comparison between two policies on that episode: it removes the part of the
  return the policy cannot choose (a per-episode baseline). An episode return is then "how much better than
  the teacher", and 0 is the clone's starting point.
* **A curriculum.** Episodes are ordered by difficulty (:func:`difficulty`: a lower budget, and a trace that
  moves). The replay draws uniformly among the easiest ``level`` fraction of them; :class:`CurriculumCallback`
  raises ``level`` from ``start`` to 1 over the first ``ramp`` fraction of training.

SB3 has no notion of either: its ``VecNormalize`` normalises rewards by a running scale, which does not remove
a per-episode offset, and Gymnasium's wrappers do not know the teacher. Hence this small wrapper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from rankrl.train.imitation import ImitationDataset

MOVING_TRACE_DIFFICULTY = 0.5
"""What a trace that moves adds to an episode's difficulty, against a budget fraction's ``1 - fraction``."""


def difficulty(budget_frac: float, trace: str) -> float:
    """How hard an episode is for the curriculum: ``1 - budget_frac``, plus 0.5 when the trace moves."""
    return (1.0 - float(budget_frac)) + (0.0 if trace == "constant" else MOVING_TRACE_DIFFICULTY)


@dataclass(frozen=True)
class ReplayPlan:
    """The teacher's episodes a replay draws from, easiest first (small and picklable: each worker gets a copy).

    Attributes:
        seeds: Reset seed of each episode, in order of :func:`difficulty`.
        teacher_rewards: The teacher's reward at each decision of each episode (same order).
        difficulties: Each episode's difficulty (same order, ascending).
        teacher: The teacher's spec.
        relative: Subtract the teacher's reward (else the environment's reward is passed as is).
    """

    seeds: tuple[int, ...]
    teacher_rewards: tuple[tuple[float, ...], ...]
    difficulties: tuple[float, ...]
    teacher: str
    relative: bool = True

    @classmethod
    def from_dataset(cls, dataset: ImitationDataset, relative: bool = True) -> ReplayPlan:
        """The plan of an imitation dataset (format 2: it keeps per-step rewards, budgets and traces).

        Raises:
            ValueError: the dataset has no episode seeds, budgets or traces to replay, or the teacher did not
                drive its episodes.
        """
        if dataset.driver != "teacher":
            raise ValueError(f"The imitation dataset of teacher {dataset.teacher!r} holds episodes a {dataset.driver} "
                             "drove (DAgger rows); only the teacher's own episodes can be replayed.")
        episodes = len(dataset.episode_seeds)
        if episodes == 0 or len(dataset.episode_budgets) != episodes or len(dataset.episode_traces) != episodes:
            raise ValueError(f"The imitation dataset of teacher {dataset.teacher!r} has no episode seeds, budgets and "
                             "traces to replay; collect it again (rankrl train --teacher NAME --bc-data NEW_FILE).")
        rewards = [tuple(float(r) for r in dataset.rewards[dataset.episode_ids == i]) for i in range(episodes)]
        scores = [difficulty(b, t) for b, t in zip(dataset.episode_budgets, dataset.episode_traces, strict=True)]
        order = sorted(range(episodes), key=lambda i: (scores[i], i))
        return cls(tuple(int(dataset.episode_seeds[i]) for i in order), tuple(rewards[i] for i in order),
                   tuple(scores[i] for i in order), dataset.teacher, relative)

    def eligible(self, level: float) -> int:
        """How many of the easiest episodes a replay at curriculum ``level`` (0-1] draws from (at least one)."""
        return max(1, min(len(self.seeds), math.ceil(level * len(self.seeds))))


class TeacherReplay(gym.Wrapper):
    """Reset into one of the teacher's episodes and reward the policy against the teacher there.

    Each reset draws an episode uniformly among the :meth:`ReplayPlan.eligible` easiest at the current
    :attr:`level`, from the wrapper's own generator (seeded by the first seeded reset, as SB3 seeds each
    worker), and resets the environment with that episode's seed. ``info`` gains ``teacher_reward``,
    ``reward/environment`` (the reward before the subtraction), ``replay/episode`` and ``replay/level``.
    """

    def __init__(self, env: gym.Env, plan: ReplayPlan, level: float = 1.0) -> None:
        super().__init__(env)
        self.plan = plan
        self.level = float(level)
        self._rng = np.random.default_rng(0)
        self._rewards: tuple[float, ...] = ()
        self._t = 0
        self._index = -1

    def set_level(self, level: float) -> None:
        """Set the curriculum level: the fraction (0-1] of the episodes, easiest first, that resets draw from."""
        if not 0.0 < level <= 1.0:
            raise ValueError(f"A curriculum level is in (0, 1], got {level}.")
        self.level = float(level)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._index = int(self._rng.integers(self.plan.eligible(self.level)))
        self._rewards, self._t = self.plan.teacher_rewards[self._index], 0
        obs, info = self.env.reset(seed=self.plan.seeds[self._index], options=options)
        return obs, {**info, "replay/episode": self._index, "replay/level": self.level}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        teacher = self._rewards[self._t] if self._t < len(self._rewards) else 0.0
        self._t += 1
        info = {**info, "teacher_reward": teacher, "reward/environment": float(reward)}
        return obs, (float(reward) - teacher) if self.plan.relative else reward, terminated, truncated, info


class CurriculumCallback(BaseCallback):
    """Raise the replay's curriculum level linearly from ``start`` to 1 over the first ``ramp`` of training.

    The level is set in every worker (``VecEnv.env_method``) at the start of training and before each rollout,
    and logged as ``curriculum/level``.

    Args:
        total_timesteps: The run's target (environment steps).
        start: The level at step 0 (the easiest ``start`` fraction of the teacher's episodes).
        ramp: Fraction of ``total_timesteps`` after which every episode is drawn (0: all from the start).
    """

    def __init__(self, total_timesteps: int, start: float = 0.25, ramp: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < start <= 1.0 or not 0.0 <= ramp <= 1.0:
            raise ValueError(f"A curriculum starts in (0, 1] and ramps over [0, 1] of training; got start={start}, "
                             f"ramp={ramp}.")
        self.total, self.start, self.ramp = total_timesteps, start, ramp
        self.level = start

    def level_at(self, timesteps: int) -> float:
        """The level after ``timesteps`` environment steps."""
        if self.ramp == 0.0:
            return 1.0
        progress = min(1.0, timesteps / max(1.0, self.ramp * self.total))
        return self.start + (1.0 - self.start) * progress

    def _set(self) -> None:
        self.level = self.level_at(self.num_timesteps)
        self.training_env.env_method("set_level", self.level)
        self.logger.record("curriculum/level", self.level)

    def _on_training_start(self) -> None:
        self._set()

    def _on_rollout_start(self) -> None:
        self._set()

    def _on_step(self) -> bool:
        return True
