"""Controller overhead: step time of fine-tuning with the `learned` controller deciding every 10 steps,
against plain PEFT LoRA at the same ranks, MiniLM-L6, batch 16, seq 64, as a ratio measured in one run.

The policy is a PPO network for 4 groups whose output is pinned to "hold" (zero weights, bias on the
middle action), so ranks stay equal in both arms and the ratio measures only the machinery: importance
accumulation every step, input-variance sampling, the signal read (importance, spectral features, input
variance, loss, memory meter), the observation, the policy forward, the clip (no budget is set, so the
wall has nothing to cut), the decision log and the TensorBoard scalars. Target <= 1.01.

The two arms alternate in blocks of ``EVERY`` steps, so that every controlled block holds exactly one
decision, and the order within a pair of blocks alternates too. Reported:

* paired ratio: median over pairs of (controlled block time / plain block time) -- the headline figure; a
  stall that hits one block moves one pair, not the median;
* median ratio: median controlled block / median plain block; overall: total / total;
* direct: 1 + (time inside ``after_backward`` and ``step``) / median plain step. Less sensitive to other
  processes, but it leaves out the input-variance hooks' time inside forward, which the step ratios include.

The load average and the plain step time are printed: a plain step far above ~0.3 s (2 threads) means that
other processes shared the cores and the ratios are noise.

Run: ``.venv/bin/python bench/bench_controller.py [--blocks 12]``
"""

from __future__ import annotations

import argparse
import json
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
from rankrl.policy import FEATURES_FILE, METADATA_FILE, POLICY_FILE  # noqa: E402

EVERY = 10
CONTAMINATED_STEP_S = 0.4


def hold_policy(directory: Path) -> Path:
    """An SB3 PPO policy for the `default` layout (4 groups) that always chooses the zero delta."""
    from stable_baselines3 import PPO

    env = LoRARankEnv(preset="default")
    model = PPO("MlpPolicy", env, seed=0, n_steps=8, batch_size=8, device="cpu")
    with torch.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.copy_(torch.tensor([0.0, 5.0, 0.0] * env.layout.num_groups))
    model.save(directory / POLICY_FILE)
    (directory / FEATURES_FILE).write_text(json.dumps(env.layout.to_dict()))
    metadata = {"algo": "PPO", "num_groups": env.layout.num_groups, "r_max": env.config.r_max,
                "rank_step": env.config.rank_step, "deltas": [int(d) for d in env.deltas]}
    (directory / METADATA_FILE).write_text(json.dumps(metadata))
    return directory


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
        control = RankControl(ctrl, make_controller(f"learned:{policy}"), every=EVERY,
                              total_steps=EVERY * (args.blocks + 1), log_dir=Path(tmp) / "log", r_max=16, rank_step=4)
        control.setup(ctrl_opt, batch)
        inside = [0.0]

        def controlled_step(step: int) -> None:
            ctrl.model.train()
            loss = ctrl.model(**batch).loss
            loss.backward()
            started = time.perf_counter()
            control.after_backward()
            inside[0] += time.perf_counter() - started
            ctrl_opt.step()
            ctrl_opt.zero_grad(set_to_none=True)
            started = time.perf_counter()
            control.step(step, loss.item(), ctrl_opt)
            inside[0] += time.perf_counter() - started

        step = 0

        def plain_block() -> float:
            started = time.perf_counter()
            for _ in range(EVERY):
                train_step(plain, plain_opt, batch)
            return time.perf_counter() - started

        def controlled_block() -> float:
            nonlocal step
            started = time.perf_counter()
            for _ in range(EVERY):
                step += 1
                controlled_step(step)  # the block's last step decides
            return time.perf_counter() - started

        plain_block()  # warm-up of both arms, one decision included
        controlled_block()
        inside[0] = 0.0
        plain_times, ctrl_times = [], []
        for pair in range(args.blocks):  # interleaved blocks: machine noise hits both arms alike
            if pair % 2:
                ctrl_times.append(controlled_block())
                plain_times.append(plain_block())
            else:
                plain_times.append(plain_block())
                ctrl_times.append(controlled_block())
        control.close()
        assert ctrl.group_ranks == plain.group_ranks, "the hold policy must keep the ranks equal"
        decisions = len((Path(tmp) / "log" / "decisions.jsonl").read_text().splitlines())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    paired = statistics.median(c / p for c, p in zip(ctrl_times, plain_times, strict=True))
    ratio = statistics.median(ctrl_times) / statistics.median(plain_times)
    total = sum(ctrl_times) / sum(plain_times)
    plain_step = statistics.median(plain_times) / EVERY
    direct = 1.0 + inside[0] / (args.blocks * EVERY) / plain_step
    print(f"MiniLM-L6 batch 16 seq 64, {args.threads} threads, learned controller every {EVERY} steps "
          f"({decisions} decisions), ranks {plain.group_ranks} in both arms, {args.blocks} block pairs")
    print(f"  plain step {plain_step:.3f} s (median), load average {load:.2f}")
    print(f"  step time with controller / plain PEFT LoRA: paired {paired:.4f}, median of blocks {ratio:.4f}, "
          f"overall {total:.4f}, direct {direct:.4f}  (target <= 1.01)")
    print("  pair ratios: " + " ".join(f"{c / p:.3f}" for c, p in zip(ctrl_times, plain_times, strict=True)))
    if plain_step > CONTAMINATED_STEP_S:
        print(f"  WARNING: plain step above {CONTAMINATED_STEP_S} s: other processes shared the cores; "
              "these ratios are noise.")


if __name__ == "__main__":
    main()
