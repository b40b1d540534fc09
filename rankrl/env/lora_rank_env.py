"""``LoRARankEnv``: a Gymnasium environment in which each step reallocates LoRA rank across layer groups."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rankrl.budget import (
    BudgetTooSmallError,
    BudgetTrace,
    MemoryBudget,
    check_budget_trainable,
    clip_to_budget,
    fit_to_wall,
)
from rankrl.data import TaskData, load_task_data
from rankrl.env.config import EnvConfig, load_env_config
from rankrl.env.observation import ObservationLayout
from rankrl.env.plans import NO_PLAN, plan_names, plan_ranks
from rankrl.lora import RankedLoRA
from rankrl.lora.allocation import apply_allocation, backward_depth
from rankrl.session import FineTuneSession, TrainResult
from rankrl.signals import SignalReader, Signals

MB = 1024 * 1024
FREEZE, THAW = "freeze", "thaw"


def action_names(levels: int, rank_step: int) -> list[str]:
    """What each action index of one group does: the rank deltas, then ``freeze`` and ``thaw``."""
    half = levels // 2
    return [f"{d * rank_step:+d}" for d in range(-half, half + 1)] + [FREEZE, THAW]


class _Episode(NamedTuple):
    """What :meth:`LoRARankEnv.reset` builds and every step works on."""

    session: FineTuneSession
    rl: RankedLoRA
    reader: SignalReader
    meter: MemoryBudget
    trace: BudgetTrace


class LoRARankEnv(gym.Env):
    """Spend a moving memory budget on LoRA rank and trainable depth during a real fine-tuning run.

    One episode is one fine-tuning run from fresh adapters on a task drawn from the preset's task family,
    under a budget that may move. One step is one decision: change the rank of every layer group, or freeze
    or thaw it, then train ``K`` optimizer steps, evaluate on a small held-out set, and return the reward.
    The first decision comes before the first optimizer step.

    ## Action Space
    ``MultiDiscrete([levels + 2] * G + [P])``. The first G entries, one per group, index
    ``action_names(levels, rank_step)``: the rank deltas ``(-(levels-1)/2 .. +(levels-1)/2) * rank_step``
    (with the default 3 levels ``{-step, 0, +step}``), then ``freeze`` and ``thaw``. Ranks stay in
    ``[0, r_max]``; rank 0 removes the group's adapters (their update is dropped, their memory freed).
    ``freeze`` keeps a group's update exactly and stops training it: no gradients, no optimizer state, and
    once nothing below trains, no saved activations there. ``thaw`` trains a frozen group again; it exists
    because budgets also rise (a ``step-up`` trace), and without it memory freed by a freeze could only be
    spent on rank. Rank deltas on a frozen group shrink or grow its frozen factors (growth adds nothing).
    The last entry is the **plan** (:attr:`plans`, :mod:`rankrl.env.plans`): at the first decision, any plan
    but ``none`` sets a whole allocation, the top ``k`` groups at rank ``r`` and rank 0 below, in place of
    the per-group entries; at later decisions it is ignored. Growths and thaws that would cross the wall
    are cut back (largest growth that fits, groups taken in order of importance) and reported in
    ``info["clipped_groups"]``.

    ## Observation Space
    ``Box`` of ``10 + 9 G`` float32 features with fixed bounds (names in :attr:`feature_names`):
    run level: ``loss/ema_rel``, ``loss/slope_x100``, ``eval/gain`` (the fraction of the starting error
    closed, ``(acc - acc_0) / (1 - acc_0)`` with ``acc_0`` the evaluation at reset), ``eval/gain_delta``
    (its change since the last decision), ``memory/used_frac`` (of the budget), ``memory/headroom_frac``,
    ``budget/ref_frac`` (the budget as a fraction of the reference), ``budget/trend`` (its change since the
    last decision, of the reference), ``budget/floor_frac`` (the lowest budget of the episode's trace, of
    the reference: what a rule that chooses once fits, known ahead as a ``--budget-trace`` file is),
    ``progress``; per group: ``rank_frac``, ``importance_share`` (AdaLoRA sensitivity x uncertainty),
    ``grad_norm_share``, ``input_variance_share``, ``rank_utilization`` (spectral), ``grow_cost_ref``
    (bytes of the next +step / reference), ``freeze_free_ref`` (bytes a freeze frees / reference),
    ``frozen``, ``last_change``. The size depends only on G, so a policy trained on a small model can drive a
    larger one.

    ## Rewards
    ``r_t = w_acc (acc_t - acc_{t-1}) - w_mem mean(used / reference) / T - w_time mean(depth) / T
    - w_wall [the wall cut or forced this decision]``, where the means run over the K optimizer steps of
    the decision, ``depth`` is the fraction of the groups from the lowest training one to the top (how far
    the backward pass reaches: a deterministic proxy of step time, which a measured time would not be) and
    ``T`` is the episode length. Memory enters as the **wall**, a hard constraint: after every decision and
    whenever the budget drops within the K steps, :func:`rankrl.budget.fit_to_wall` frees memory before the
    next optimizer step, so measured memory never exceeds the budget. The memory and time costs are small
    by default, so that the wall, not a memory weight, decides how much memory is worth; over an episode the
    sum is the final accuracy gain minus those costs. ``info`` carries every part (``reward/*``).

    ## Starting State
    Fresh LoRA adapters at ``rank_init`` in every group, a freshly drawn classification head, a task drawn
    from the task family and a run seed. The **reference** memory is the run at ``rank_init`` with every
    group training, measured at reset on the task's reference batch (its first ``batch_size`` training rows
    padded to ``max_length``), where all memory is measured. The budget fraction is drawn uniformly from
    ``budget_range`` (else ``budget_frac``) and a trace kind from ``traces``
    (:class:`~rankrl.budget.BudgetTrace`), both from ``self.np_random``; the budget may be below the
    starting memory, which the first action (and the wall) must meet.

    ## Episode End
    Truncated after ``episode_length`` decisions (``max_episode_steps`` of the registration). Terminated
    early with ``-w_divergence`` when the training loss becomes NaN or infinite.

    ## Arguments
    ``gymnasium.make("rankrl/tiny-v3")`` or ``LoRARankEnv(preset="tiny", **overrides)`` or
    ``LoRARankEnv(config=EnvConfig(...))``. Overrides are preset keys (see :class:`EnvConfig`).
    ``torch_threads`` sets ``torch.set_num_threads`` in the process that builds the environment
    (``rankrl train`` gives each subprocess worker one thread).

    ## State for rule controllers
    :attr:`signals` (the reading the last observation was built from), :attr:`budget` (the memory meter: the
    wall in force, its floor and the reference), :attr:`last_change` and :attr:`budget_trend` are read-only
    views of what the observation is built from. With ``session.step`` and :attr:`total_steps` they are
    exactly what :meth:`rankrl.controllers.ControllerContext.build` takes, so a rule controller can decide
    on the state the policy sees (:mod:`rankrl.train.teacher`).

    ## Version History
    * v3: the first allocation is chosen whole, by a plan head over the allocations ``static-fit`` tries
      (the top ``k`` groups at a uniform rank): independent per-group heads mixed two such allocations near
      a breakpoint into a third that neither was. The per-group costs are fractions of the reference
      (``grow_cost_ref``, ``freeze_free_ref``), not of the budget in force, so they read the same whatever
      the budget is.
    * v2: the accuracy features became the gain over the run's start (``eval/gain``, ``eval/gain_delta``):
      an untrained head starts near 1/C on a C-class task, so the raw accuracy told a policy how many
      classes a task has, not how far its training had come. ``budget/floor_frac`` is new: without it a
      policy cloned from ``static-fit`` could not tell a constant budget from one that will drop. The
      presets' task families include a six-class task (``mix``), and the ``minilm`` preset moves rank in
      steps of 2, up to 4 steps a decision. A trace's higher level reaches up to 1.0 of the reference
      (:meth:`~rankrl.budget.BudgetTrace.shape`), so a budget can fall by everything above its floor.
    * v1: freeze and thaw actions; budgets drawn per episode and moving along a trace, relative to the
      reference memory; the first decision before the first step; the wall as a hard constraint with small
      mean-memory and depth costs; budget and frozen features in the observation.
    * v0: rank deltas only, under a fixed wall at the memory measured at reset.
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
        self.actions = action_names(config.action_levels, config.rank_step)
        self.plans = plan_names(config.num_action_groups, config.r_max, config.rank_step)
        self.action_space = spaces.MultiDiscrete([len(self.actions)] * config.num_action_groups + [len(self.plans)])
        half = config.action_levels // 2
        self.deltas = np.arange(-half, half + 1) * config.rank_step
        self.session: FineTuneSession | None = None
        self.reader: SignalReader | None = None
        self.trace: BudgetTrace | None = None
        self._tasks: dict[str, TaskData] = {}
        # task -> (reference batch, measured what-if cache). Saved-activation bytes depend only on shapes and
        # on which parameters train, so a configuration measured once in this process is not measured again.
        self._references: dict[str, tuple[dict, dict]] = {}
        self._t = 0
        self._signals: Signals | None = None
        self._last_change: list[float] = [0.0] * config.num_action_groups
        self._trend = 0.0
        self.last_timing: dict[str, float] = {}

    @property
    def feature_names(self) -> list[str]:
        """Observation feature names, in vector order."""
        return self.layout.names

    @property
    def hold(self) -> np.ndarray:
        """The action that changes nothing: the zero delta for every group and no plan."""
        return np.asarray([self.config.action_levels // 2] * self.layout.num_groups + [0], dtype=np.int64)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of one episode."""
        return self.config.episode_length * self.config.steps_per_action

    @property
    def signals(self) -> Signals | None:
        """The signal reading behind the last observation (``None`` before :meth:`reset`)."""
        return self._signals

    @property
    def budget(self) -> MemoryBudget | None:
        """The memory meter: ``budget`` (the wall in force), ``floor`` (the trace's lowest), ``reference``."""
        return self.reader.budget if self.reader is not None else None

    @property
    def last_change(self) -> list[float]:
        """Sign of each group's rank change at the last decision (the ``last_change`` features)."""
        return list(self._last_change)

    @property
    def budget_trend(self) -> float:
        """Change of the budget since the previous decision, as a fraction of the reference memory."""
        return self._trend

    # ------------------------------------------------------------------ episode
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        config = self.config
        task = options.get("task") or config.tasks[int(self.np_random.integers(len(config.tasks)))]
        run_seed = int(options.get("run_seed", self.np_random.integers(2**31 - 1)))
        if "budget_frac" in options:
            fraction = float(options["budget_frac"])
        elif config.budget_range is not None:
            low, high = config.budget_range
            fraction = float(self.np_random.uniform(low, high))
        else:
            fraction = config.budget_frac
        kind = options.get("trace") or config.traces[int(self.np_random.integers(len(config.traces)))]
        trace = self.trace = BudgetTrace.shape(kind, fraction, self.total_steps, self.np_random)
        data = self._task(task)
        if self.session is None:
            self.session = FineTuneSession(config.session_config(task, run_seed), task=data)
        session = self.session
        session.reset(seed=run_seed, task=data)
        if self.reader is not None:
            self.reader.close()
        if session.rl is None:
            raise RuntimeError("FineTuneSession.reset() attached no adapter.")
        reader = self.reader = SignalReader(session.rl, optimizer=session.optimizer, budget_bytes=2**62,
                                            memory_scope=config.memory_scope, rank_step=config.rank_step)
        session.after_backward = [lambda _s: reader.after_backward()]
        session.prefix_observers = [reader.variance] if reader.variance is not None else []
        episode = self._live()
        rl, meter = episode.rl, episode.meter
        # Memory is always measured on one fixed batch of the task: training batches vary in padded length,
        # and a reading on them would move with the data, not with the ranks.
        if task not in self._references:
            self._references[task] = (session.reference_batch(), {})
        self._reference, crossings = self._references[task]
        status = meter.read(session.optimizer, self._reference)
        meter.share_crossings(crossings)
        self.reference = max(int(status.used), 1)
        meter.reference = self.reference
        meter.floor = trace.minimum_bytes(self.reference)
        meter.budget = meter.floor
        size = self.layout.num_groups
        try:
            check_budget_trainable(meter, [[config.rank_step if g == live else 0 for g in range(size)]
                                           for live in range(size)], "the environment")
        except BudgetTooSmallError as err:
            raise BudgetTooSmallError(f"{err} Raise budget_mb, budget_frac or budget_range of the preset.") from None
        meter.budget = self._budget_at(0)
        meter.read(session.optimizer)
        self._last_budget = meter.budget
        first = session.evaluate()
        reader.update_eval(first.accuracy)
        self._accuracy = first.accuracy
        self._t = 0
        self._last_change = [0.0] * self.layout.num_groups
        self._trend = 0.0
        self._signals = reader.read()
        info = {"task": task, "run_seed": run_seed, "accuracy": first.accuracy, "budget_bytes": meter.budget,
                "reference_bytes": self.reference, "budget_frac": fraction, "trace": trace.to_dict(),
                "ranks": rl.group_ranks}
        return self._observation(), info

    def _task(self, source: str) -> TaskData:
        if source not in self._tasks:
            self._tasks[source] = load_task_data(source, seed=0, max_train=self.config.train_size)
        return self._tasks[source]

    def _live(self) -> _Episode:
        """The episode's session, model, signal reader, memory budget and trace, which :meth:`reset` creates."""
        session, reader, trace = self.session, self.reader, self.trace
        if session is None or session.rl is None or reader is None or reader.budget is None or trace is None:
            raise RuntimeError("Call reset() before step().")
        return _Episode(session, session.rl, reader, reader.budget, trace)

    def _read_signals(self) -> Signals:
        """The last signal reading, which :meth:`reset` and :meth:`step` take."""
        if self._signals is None:
            raise RuntimeError("Call reset() before step().")
        return self._signals

    def _budget_at(self, step: int) -> int:
        return max(self._live().trace.bytes_at(step, self.reference), 1)

    # ------------------------------------------------------------------ decisions
    def step(self, action):
        session, rl, reader, meter, _ = self._live()
        started = time.perf_counter()
        config = self.config
        action = np.asarray(action, dtype=np.int64).reshape(-1)
        if action.shape != self.action_space.shape or not self.action_space.contains(action):
            raise ValueError(f"Action {action.tolist()} is not in {self.action_space}.")
        before = rl.group_ranks
        frozen_before = list(rl.frozen_groups)
        plan = self.plans[action[-1]] if session.step == 0 else NO_PLAN
        requested, wanted = plan_ranks(plan, len(before)), [False] * len(before)
        if requested is None:
            requested, wanted = [], []
            for rank, was_frozen, a in zip(before, frozen_before, action[:-1], strict=True):
                name = self.actions[a]
                if name in (FREEZE, THAW):
                    requested.append(rank)
                    wanted.append(name == FREEZE and rank > 0)
                else:
                    requested.append(int(np.clip(rank + self.deltas[a], 0, config.r_max)))
                    wanted.append(was_frozen)
        shares = [group.get("importance_share", 0.0) for group in self._read_signals().groups]
        ranks, frozen, clipped = clip_to_budget(meter, before, requested, config.rank_step, shares,
                                                frozen_before, wanted)
        ranks, frozen, forced = fit_to_wall(meter, ranks, frozen, fresh=session.step == 0, priority=shares)
        self._allocate(ranks, frozen)
        self._last_change = [float(np.sign(a - b)) for a, b in zip(ranks, before, strict=True)]
        train_started = time.perf_counter()
        result, memory_mean, depth_mean, forced_later = self._train_within_budget(config.steps_per_action)
        for loss in result.losses:
            reader.update_loss(loss)
        self._t += 1
        weights = config.reward
        base_info = {"ranks": rl.group_ranks, "frozen": list(rl.frozen_groups), "plan": plan,
                     "requested_ranks": requested, "requested_frozen": wanted, "clipped_groups": clipped,
                     "forced_groups": sorted(set(forced) | set(forced_later))}
        if result.diverged:
            info = {**base_info, "diverged": True, "reward/divergence": -weights.divergence}
            return self._observation(), -weights.divergence, True, False, info
        metrics = session.evaluate()
        train_eval_time = time.perf_counter() - train_started
        reader.update_eval(metrics.accuracy)
        budget_now = self._budget_at(session.step)
        self._trend = (budget_now - self._last_budget) / self.reference
        self._last_budget = budget_now
        meter.budget = budget_now
        self._signals = reader.read()
        memory = self._signals.memory
        if memory is None:  # the reader has a budget, so every reading carries its memory status
            raise RuntimeError("The signal reading has no memory status.")
        T = config.episode_length
        parts = {
            "reward/accuracy": weights.accuracy * (metrics.accuracy - self._accuracy),
            "reward/memory": -weights.memory * memory_mean / T,
            "reward/time": -weights.time * depth_mean / T,
            "reward/wall": -weights.wall * float(bool(clipped or forced or forced_later)),
        }
        self._accuracy = metrics.accuracy
        info = {
            **parts, **base_info, "wall_hit": bool(clipped or forced or forced_later),
            "accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1, "eval_loss": metrics.loss,
            "train_loss": result.mean_loss, "memory_used_frac": memory.used_frac,
            "memory_used_bytes": memory.used, "budget_bytes": budget_now,
            "memory_mean_ref_frac": memory_mean, "backward_depth": depth_mean,
        }
        # Wall times stay out of ``info`` (which must be deterministic for a seed); benchmarks read them here.
        self.last_timing = {"train_eval": train_eval_time, "step": time.perf_counter() - started}
        return self._observation(), float(sum(parts.values())), False, False, info

    def _allocate(self, ranks: list[int], frozen: list[bool]) -> None:
        """Apply an allocation and measure it on the reference batch (cached per training set)."""
        session, rl, _, meter, _ = self._live()
        apply_allocation(rl, ranks, frozen, session.optimizer)
        if not rl.activations_measured:
            meter.measure_kept_batch()

    def _train_within_budget(self, steps: int) -> tuple[TrainResult, float, float, list[int]]:
        """Train ``steps`` optimizer steps; wherever the trace drops below the memory in use, fit first.

        Returns the training result, the mean of used / reference and of the backward depth over the steps,
        and the groups the wall forced on the way.
        """
        session, rl, _, meter, trace = self._live()
        start, end = session.step, session.step + steps
        changes = [s for s, _ in trace.points if start < s < end]
        bounds = [start, *changes, end]
        losses: list[float] = []
        memory, depth, forced = 0.0, 0.0, []
        result: TrainResult | None = None
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            meter.budget = self._budget_at(lo)
            used = meter.read(session.optimizer).used
            if used > meter.budget:
                ranks, frozen, moved = fit_to_wall(meter, rl.group_ranks, list(rl.frozen_groups),
                                                   fresh=lo == 0)
                self._allocate(ranks, frozen)
                forced += moved
                used = meter.read(session.optimizer).used
            memory += used / self.reference * (hi - lo)
            depth += backward_depth(rl) * (hi - lo)
            result = session.train(hi - lo)
            losses += result.losses
            if result.diverged:
                break
        if result is None:
            raise ValueError(f"steps_per_action must be positive, got {steps}.")
        result.losses = losses
        return result, memory / steps, depth / steps, sorted(set(forced))

    def _observation(self) -> np.ndarray:
        values = self.layout.build(self._read_signals(), r_max=self.config.r_max, last_change=self._last_change,
                                   progress=min(1.0, self._t / self.config.episode_length), budget_trend=self._trend)
        self.last_features = values
        return self.layout.vector(values)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
