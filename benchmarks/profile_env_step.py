"""Where an environment step's time goes: train steps, evaluation, memory measurement, signals, resizing.

Runs ``--steps`` random-action steps of a preset (after one warm-up episode start) with timers wrapped
around the functions a step calls. Each timer charges its own time minus the time of timed calls inside it,
so the parts add up to the step without double counting: the importance accumulation after each backward
is charged to signals, not to the train steps, and a memory reading inside a signal read to memory. Resets
(a new episode: the session and the task's reference measurements) are reported apart.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/profile_env_step.py [--preset default] [--steps 30] [--seed 0]``
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict

import torch

import rankrl.env.lora_rank_env as env_module
from rankrl.budget.meter import MemoryBudget
from rankrl.env import LoRARankEnv
from rankrl.session import FineTuneSession
from rankrl.signals.activations import InputVarianceTracker
from rankrl.signals.reader import SignalReader

# (owner, attribute, part): what each timer is charged to.
TIMED = [
    (FineTuneSession, "train", "train steps (forward, backward, AdamW)"),
    (FineTuneSession, "evaluate", "evaluation (held-out subset)"),
    (SignalReader, "read", "signals: read (spectral SVDs, aggregation)"),
    (SignalReader, "after_backward", "signals: importance after each backward"),
    (InputVarianceTracker, "_sample", "signals: input-variance samples"),
    (MemoryBudget, "read", "memory: readings (bytes, per-group move costs)"),
    (MemoryBudget, "predict_used", "memory: readings (bytes, per-group move costs)"),
    (MemoryBudget, "_what_if_activations", "memory: what-if forward passes (uncached)"),
    (MemoryBudget, "measure_kept_batch", "memory: kept-batch activations"),
    (env_module, "clip_to_budget", "memory: the wall (clip, fit)"),
    (env_module, "fit_to_wall", "memory: the wall (clip, fit)"),
    (env_module, "apply_allocation", "resize (apply the allocation)"),
]


class Timers:
    """Exclusive wall time per part: a timed call inside another is charged to its own part only."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[float]] = []  # per active timer: [time of timed children]

    def wrap(self, function, part: str):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self._stack.append([0.0])
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                children = self._stack.pop()[0]
                self.totals[part] += elapsed - children
                self.calls[part] += 1
                if self._stack:
                    self._stack[-1][0] += elapsed
        return timed

    def install(self) -> None:
        for owner, name, part in TIMED:
            setattr(owner, name, self.wrap(getattr(owner, name), part))

    def reset(self) -> None:
        self.totals.clear()
        self.calls.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    timers = Timers()
    timers.install()
    env = LoRARankEnv(preset=args.preset)
    env.action_space.seed(args.seed)
    started = time.perf_counter()
    env.reset(seed=args.seed)
    first_reset = time.perf_counter() - started
    timers.reset()
    step_time, reset_time, resets, steps = 0.0, 0.0, 0, 0
    while steps < args.steps:
        started = time.perf_counter()
        _, _, terminated, _, _ = env.step(env.action_space.sample())
        step_time += time.perf_counter() - started
        steps += 1
        if terminated or env._t >= env.config.episode_length:
            step_parts = dict(timers.totals)  # time inside a reset is not a step's
            started = time.perf_counter()
            env.reset()
            reset_time += time.perf_counter() - started
            resets += 1
            timers.totals.clear()
            timers.totals.update(step_parts)
    env.close()
    config = env.config
    print(f"preset {args.preset}: {steps} random-action steps (K={config.steps_per_action} optimizer steps + an "
          f"evaluation of {config.eval_size} rows each, batch {config.batch_size}, {config.num_action_groups} groups), "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'part':48s} {'s/step':>8s} {'share':>7s}")
    accounted = 0.0
    for part, total in sorted(timers.totals.items(), key=lambda item: -item[1]):
        accounted += total
        print(f"{part:48s} {total / steps:8.4f} {total / step_time:7.1%}")
    print(f"{'other (env bookkeeping, observation, reward)':48s} {(step_time - accounted) / steps:8.4f} "
          f"{(step_time - accounted) / step_time:7.1%}")
    print(f"{'step total':48s} {step_time / steps:8.4f} {1:7.1%}  ({steps / step_time:.2f} env steps/s)")
    print(f"reset: first {first_reset:.2f} s (model, data, reference), later {reset_time / max(resets, 1):.2f} s "
          f"each over {resets} resets")


if __name__ == "__main__":
    main()
