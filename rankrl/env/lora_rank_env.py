"""``LoRARankEnv``: a Gymnasium environment in which each step reallocates LoRA rank across layer groups."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rankrl.data import TaskData, load_task_data
from rankrl.env.config import EnvConfig, load_env_config
from rankrl.env.observation import ObservationLayout
from rankrl.session import FineTuneSession
from rankrl.signals import SignalReader
from rankrl.budget.wall import clip_to_budget

MB = 1024 * 1024


class LoRARankEnv(gym.Env):
    """Allocate LoRA rank across layer groups during a real fine-tuning run.

    One episode is one fine-tuning run from fresh adapters on a task drawn from the preset's task family.
    One step is one decision: change the rank of every layer group, train ``K`` optimizer steps, evaluate on
    a small held-out set, and return the reward.

    ## Action Space
    ``MultiDiscrete([levels] * G)``: for each of the G groups an index into the deltas
    ``(-(levels-1)/2 .. +(levels-1)/2) * rank_step``; with the default 3 levels, ``{-step, 0, +step}``.
    Ranks stay in ``[0, r_max]``; rank 0 removes the group's adapters (their memory is freed). A growth that
    would cross the memory budget is clipped at the wall (largest growth that fits, groups taken in order
    of importance) and reported in ``info["clipped_groups"]``.

    ## Observation Space
    ``Box`` of ``6 + 7 G`` float32 features with fixed bounds (names in :attr:`feature_names`):
    run level: ``loss/ema_rel``, ``loss/slope_x100``, ``eval/accuracy``, ``eval/accuracy_delta``,
    ``memory/used_frac``, ``progress``; per group: ``rank_frac``, ``importance_share`` (AdaLoRA
    sensitivity x uncertainty), ``grad_norm_share``, ``input_variance_share``, ``rank_utilization``
    (spectral), ``grow_cost_frac`` (bytes of the next +step / budget), ``last_change``. The size depends only
    on G, so a policy trained on a small model can drive a larger one.

    ## Rewards
    ``r_t = w_acc * (acc_t - acc_{t-1}) - lambda * used_t / budget / T - w_wall * [clipped at the wall]``,
    where ``acc_0`` is measured at reset and ``T`` is the episode length. Over an episode the sum is the
    final accuracy gain minus the (time-averaged) memory integral and the wall penalties. ``info`` carries
    every part (``reward/accuracy``, ``reward/memory``, ``reward/wall``).

    ## Starting State
    Fresh LoRA adapters at ``rank_init`` in every group, a freshly drawn classification head, a task drawn
    from the task family and a run seed, both from ``self.np_random``. The budget is ``budget_mb`` or
    ``budget_frac`` times the memory measured at reset. Memory is always measured on the task's reference
    batch (its first ``batch_size`` training rows), so ``memory/used_frac`` moves with the ranks only.

    ## Episode End
    Truncated after ``episode_length`` decisions (``max_episode_steps`` of the registration). Terminated
    early with ``-w_divergence`` when the training loss becomes NaN or infinite.

    ## Arguments
    ``gymnasium.make("rankrl/tiny-v0")`` or ``LoRARankEnv(preset="tiny", **overrides)`` or
    ``LoRARankEnv(config=EnvConfig(...))``. Overrides are preset keys (see :class:`EnvConfig`).
    ``torch_threads`` sets ``torch.set_num_threads`` in the process that builds the environment
    (``rankrl train`` gives each subprocess worker one thread).

    ## Version History
    * v0: initial version. Memory readings were taken on the first training batch after each rank change
      (varying padded length) until they moved to the fixed reference batch.
    """

    metadata = {"render_modes": []}

    def __init__(self, preset: str | None = None, config: EnvConfig | None = None, render_mode: str | None = None,
                 torch_threads: int | None = None, **overrides: Any) -> None:
        if torch_threads is not None:  # vectorised workers: one thread each, or two cores thrash
            import torch

            torch.set_num_threads(torch_threads)
        # Nothing to draw: info, TensorBoard and `rankrl explain` carry the state. A requested render mode
        # (SB3's make_vec_env asks for "rgb_array") is accepted and ignored.
        self.render_mode = None
        if config is None:
            config = load_env_config(preset or "tiny", **overrides)
        elif overrides:
            raise ValueError("Pass overrides with a preset name, not with a ready EnvConfig.")
        self.config = config
        self.layout = ObservationLayout(config.num_action_groups)
        low, high = self.layout.bounds
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float32)
        self.action_space = spaces.MultiDiscrete([config.action_levels] * config.num_action_groups)
        half = config.action_levels // 2
        self.deltas = np.arange(-half, half + 1) * config.rank_step
        self.session: FineTuneSession | None = None
        self.reader: SignalReader | None = None
        self._tasks: dict[str, TaskData] = {}
        # task -> (reference batch, measured what-if cache). Saved-activation bytes depend only on shapes and
        # on which parameters train, so a configuration measured once in this process is not measured again.
        self._references: dict[str, tuple[dict, dict]] = {}
        self._t = 0
        self.last_timing: dict[str, float] = {}

    @property
    def feature_names(self) -> list[str]:
        """Observation feature names, in vector order."""
        return self.layout.names

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        config = self.config
        task = options.get("task") or config.tasks[int(self.np_random.integers(len(config.tasks)))]
        run_seed = int(options.get("run_seed", self.np_random.integers(2**31 - 1)))
        data = self._task(task)
        if self.session is None:
            self.session = FineTuneSession(config.session_config(task, run_seed), task=data)
        self.session.reset(seed=run_seed, task=data)
        if self.reader is not None:
            self.reader.close()
        session = self.session
        self.reader = SignalReader(session.rl, optimizer=session.optimizer, budget_bytes=2**62,
                                   memory_scope=config.memory_scope, rank_step=config.rank_step)
        session.after_backward = [lambda _s: self.reader.after_backward()]
        # Memory is always measured on one fixed batch of the task: training batches vary in padded length,
        # and a reading on them would move with the data, not with the ranks.
        if task not in self._references:
            self._references[task] = (session.reference_batch(), {})
        self._reference, crossings = self._references[task]
        status = self.reader.budget.read(session.optimizer, self._reference)
        self.reader.budget.share_crossings(crossings)
        budget = config.budget_mb * MB if config.budget_mb is not None else config.budget_frac * status.used
        if status.used > budget:
            raise ValueError(
                f"The memory budget ({budget / MB:.2f} MiB) is below what training at rank_init={config.rank_init} "
                f"needs ({status.used / MB:.2f} MiB, scope {config.memory_scope}). Raise budget_mb or lower rank_init."
            )
        self.reader.budget.budget = int(budget)
        first = session.evaluate()
        self.reader.update_eval(first.accuracy)
        self._accuracy = first.accuracy
        self._t = 0
        self._last_change = [0.0] * self.layout.num_groups
        self._signals = self.reader.read()
        info = {"task": task, "run_seed": run_seed, "accuracy": first.accuracy, "budget_bytes": int(budget),
                "ranks": session.rl.group_ranks}
        return self._observation(), info

    def _task(self, source: str) -> TaskData:
        if source not in self._tasks:
            self._tasks[source] = load_task_data(source, seed=0, max_train=self.config.train_size)
        return self._tasks[source]

    # ------------------------------------------------------------------ decisions
    def step(self, action):
        if self.session is None:
            raise RuntimeError("Call reset() before step().")
        started = time.perf_counter()
        config, session = self.config, self.session
        action = np.asarray(action, dtype=np.int64).reshape(-1)
        if action.shape != (self.layout.num_groups,) or not self.action_space.contains(action):
            raise ValueError(f"Action {action.tolist()} is not in {self.action_space}.")
        before = session.rl.group_ranks
        requested = [int(np.clip(r + self.deltas[a], 0, config.r_max)) for r, a in zip(before, action, strict=True)]
        shares = [group.get("importance_share", 0.0) for group in self._signals.groups]
        applied, clipped = clip_to_budget(self.reader.budget, before, requested, config.rank_step, shares)
        session.set_group_ranks(applied)
        if not session.rl.activations_measured:  # ranks changed: measure on the reference batch (cached)
            self.reader.budget.measure_kept_batch()
        self._last_change = [float(np.sign(a - b)) for a, b in zip(applied, before, strict=True)]
        train_started = time.perf_counter()
        result = session.train(config.steps_per_action)
        for loss in result.losses:
            self.reader.update_loss(loss)
        self._t += 1
        weights = config.reward
        if result.diverged:
            info = {"diverged": True, "ranks": applied, "requested_ranks": requested, "clipped_groups": clipped,
                    "reward/divergence": -weights.divergence}
            return self._observation(), -weights.divergence, True, False, info
        metrics = session.evaluate()
        train_eval_time = time.perf_counter() - train_started
        self.reader.update_eval(metrics.accuracy)
        self._signals = self.reader.read()
        used_frac = self._signals.memory.used_frac
        parts = {
            "reward/accuracy": weights.accuracy * (metrics.accuracy - self._accuracy),
            "reward/memory": -weights.memory * used_frac / config.episode_length,
            "reward/wall": -weights.wall * float(bool(clipped)),
        }
        self._accuracy = metrics.accuracy
        info = {
            **parts,
            "ranks": applied, "requested_ranks": requested, "clipped_groups": clipped, "wall_hit": bool(clipped),
            "accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1, "eval_loss": metrics.loss,
            "train_loss": result.mean_loss, "memory_used_frac": used_frac,
            "memory_used_bytes": self._signals.memory.used, "budget_bytes": self._signals.memory.budget,
        }
        # Wall times stay out of ``info`` (which must be deterministic for a seed); benchmarks read them here.
        self.last_timing = {"train_eval": train_eval_time, "step": time.perf_counter() - started}
        return self._observation(), float(sum(parts.values())), False, False, info

    def _observation(self) -> np.ndarray:
        values = self.layout.build(self._signals, r_max=self.config.r_max, last_change=self._last_change,
                                   progress=min(1.0, self._t / self.config.episode_length))
        self.last_features = values
        return self.layout.vector(values)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
