"""Controller overhead: step time of fine-tuning with the `learned` controller deciding every 10 steps,
against plain PEFT LoRA at the same ranks, MiniLM-L6, batch 16, seq 64, as a ratio measured in one run.

The policy is a PPO network for 4 groups whose output is pinned to "hold" (zero weights, bias on the
middle action), so ranks stay equal in both arms and the ratio measures only the machinery: importance
accumulation every step, input-variance sampling, the signal read (importance, spectral features, input
variance, loss, memory meter), the observation, the policy forward, the clip (no budget is set, so the
wall has nothing to cut), the decision log and the TensorBoard scalars. Target <= 1.01.

The two arms alternate step by step (plain, controlled, plain, controlled, ...), so a stall of the machine
hits both alike. A *block* is ``EVERY`` consecutive controlled steps (exactly one decision, at its last step)
and the ``EVERY`` plain steps interleaved with them. Reported:

* paired ratio: median over blocks of (controlled block time / plain block time), wall clock -- the
  headline figure; a stall that hits one block moves one pair, not the median;
* overall: total controlled / total plain wall time;
* CPU: the same totals in process CPU time (``time.process_time``, all threads): time the process computed,
  which other processes' load and the hypervisor's steal inflate far less than wall time;
* direct: 1 + (time inside ``after_backward``, ``step`` and the input-variance forward hooks, each timed in
  place) / median plain step. Every piece of the machinery is on this clock and little else, so it is far
  less noisy than the step ratios; what it cannot see is an indirect cost (e.g. caches the machinery
  evicts), which the step ratios would show beyond their noise.

The paired ratio comes with its approximate 95% interval (mean ± 2·std/√n over blocks), to tell whether the
step ratios can separate the machinery's cost from the machine's noise at all.

The load average and the plain step time are printed: a plain step well above its usual time (about 0.3 s
to 0.7 s on 2 threads, depending on the machine) means that other processes shared the cores.

Run: ``.venv/bin/python benchmarks/bench_controller.py [--blocks 12]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import minilm_lora, random_batch, train_step  # noqa: E402

from rankrl.controllers import make_controller  # noqa: E402
from rankrl.deploy import RankControl  # noqa: E402
from rankrl.env import LoRARankEnv  # noqa: E402
from rankrl.env.registration import env_id  # noqa: E402
from rankrl.policy import save_policy_data  # noqa: E402
from rankrl.signals.activations import InputVarianceTracker  # noqa: E402

EVERY = 10


def hold_policy(directory: Path) -> Path:
    """An SB3 PPO policy for the `default` layout (4 groups) that always chooses the zero delta and no plan."""
    from stable_baselines3 import PPO

    env = LoRARankEnv(preset="default")
    model = PPO("MlpPolicy", env, seed=0, n_steps=8, batch_size=8, device="cpu")
    with torch.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.copy_(torch.as_tensor(
            [5.0 * (i == level) for level, n in zip(env.hold, env.action_space.nvec, strict=True) for i in range(n)]))
    metadata = {"algo": "PPO", "num_groups": env.layout.num_groups, "r_max": env.config.r_max,
                "rank_step": env.config.rank_step, "actions": env.actions, "plans": env.plans,
                "env_id": env_id("default")}
    save_policy_data(model, directory, metadata, layout=env.layout.to_dict())
    return directory


class Clock:
    """Wall and process-CPU seconds of the calls made through it."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def time(self, fn, *args) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn(*args)
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu


def time_variance_hooks(clock: Clock) -> None:
    """Put every forward hook that :class:`InputVarianceTracker` installs on ``clock`` (set before it is built)."""
    def timed(make):
        def wrapper(*args, **kwargs):
            started, cpu = time.perf_counter(), time.process_time()
            try:
                return make(*args, **kwargs)
            finally:
                clock.wall += time.perf_counter() - started
                clock.cpu += time.process_time() - cpu
        return wrapper

    original = InputVarianceTracker._make_hook
    InputVarianceTracker._make_hook = lambda self, name: timed(original(self, name))
    InputVarianceTracker._capture_mask = timed(InputVarianceTracker._capture_mask)
    InputVarianceTracker._clear_mask = timed(InputVarianceTracker._clear_mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=12, help="timed blocks of each arm (each holds one decision)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = random_batch()
    with tempfile.TemporaryDirectory() as tmp:
        policy = hold_policy(Path(tmp))
        plain, plain_opt = minilm_lora(rank=8)
        ctrl, ctrl_opt = minilm_lora(rank=8)
        inside = Clock()
        time_variance_hooks(inside)  # the hooks add their own time to ``inside`` (the hold policy never resizes,
        # so no measuring forward inside ``step`` runs them and nothing is counted twice)
        control = RankControl(ctrl, make_controller(f"learned:{policy}"), every=EVERY,
                              total_steps=EVERY * (args.blocks + 1), log_dir=Path(tmp) / "log", r_max=16, rank_step=4)
        control.setup(ctrl_opt, batch)

        def controlled_step(step: int) -> None:
            ctrl.model.train()
            loss = ctrl.model(**batch).loss
            loss.backward()
            inside.time(control.after_backward)
            ctrl_opt.step()
            ctrl_opt.zero_grad(set_to_none=True)
            inside.time(control.step, step, loss.item(), ctrl_opt)

        def block(first_step: int) -> tuple[Clock, Clock]:
            """EVERY plain and EVERY controlled steps, interleaved; the last controlled step decides."""
            plain_clock, ctrl_clock = Clock(), Clock()
            for k in range(EVERY):
                arms = [(plain_clock, lambda: train_step(plain, plain_opt, batch)),
                        (ctrl_clock, lambda k=k: controlled_step(first_step + k))]
                for clock, fn in arms if k % 2 == 0 else arms[::-1]:
                    clock.time(fn)
            return plain_clock, ctrl_clock

        block(1)  # warm-up of both arms, one decision included
        inside.wall = inside.cpu = 0.0
        blocks = [block(EVERY * (b + 1) + 1) for b in range(args.blocks)]
        control.close()
        assert ctrl.group_ranks == plain.group_ranks, "the hold policy must keep the ranks equal"
        decisions = len((Path(tmp) / "log" / "decisions.jsonl").read_text().splitlines())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ratios = [c.wall / p.wall for p, c in blocks]
    paired = statistics.median(ratios)
    half = 2 * statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else float("nan")
    mean = statistics.fmean(ratios)
    total = sum(c.wall for _, c in blocks) / sum(p.wall for p, _ in blocks)
    cpu = sum(c.cpu for _, c in blocks) / sum(p.cpu for p, _ in blocks)
    plain_step = statistics.median(p.wall for p, _ in blocks) / EVERY
    direct = 1.0 + inside.wall / (args.blocks * EVERY) / plain_step
    print(f"MiniLM-L6 batch 16 seq 64, {args.threads} threads, learned controller every {EVERY} steps "
          f"({decisions} decisions), ranks {plain.group_ranks} in both arms, {args.blocks} blocks, steps interleaved")
    print(f"  plain step {plain_step:.3f} s (median), load average {load:.2f}")
    print(f"  step time with controller / plain PEFT LoRA: paired {paired:.4f}, overall {total:.4f}, "
          f"CPU {cpu:.4f}, direct {direct:.4f}  (target <= 1.01)")
    print(f"  block ratios: mean {mean:.4f}, 95% interval [{mean - half:.4f}, {mean + half:.4f}]")
    print("  each block: " + " ".join(f"{r:.3f}" for r in ratios))


if __name__ == "__main__":
    main()
