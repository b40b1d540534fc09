"""Controller overhead: step time of fine-tuning with the `learned` controller deciding every 10 steps,
against plain PEFT LoRA at the same ranks, MiniLM-L6, batch 16, seq 64, as a ratio measured in one run.

The policy is a PPO network for 4 groups whose output is pinned to "hold" (zero weights, bias on the
middle action), so ranks stay equal in both arms and the ratio measures only the machinery: importance
accumulation every step, the signal read, the observation, the policy forward, the memory wall and the
decision log. Target <= 1.01.

Run: ``.venv/bin/python bench/bench_controller.py``
"""

from __future__ import annotations

import json
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

EVERY, BLOCK, BLOCKS = 10, 10, 4


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
    torch.set_num_threads(2)
    batch = random_batch()
    with tempfile.TemporaryDirectory() as tmp:
        policy = hold_policy(Path(tmp))
        plain, plain_opt = minilm_lora(rank=8)
        ctrl, ctrl_opt = minilm_lora(rank=8)
        control = RankControl(ctrl, make_controller(f"learned:{policy}"), every=EVERY, total_steps=BLOCK * BLOCKS,
                              log_dir=Path(tmp) / "log", r_max=16, rank_step=4)
        control.setup(ctrl_opt, batch)

        def controlled_step(step: int) -> None:
            ctrl.model.train()
            loss = ctrl.model(**batch).loss
            loss.backward()
            control.after_backward()
            ctrl_opt.step()
            ctrl_opt.zero_grad(set_to_none=True)
            control.step(step, loss.item(), ctrl_opt)

        train_step(plain, plain_opt, batch)
        controlled_step(0)
        plain_times, ctrl_times, step = [], [], 1
        for _ in range(BLOCKS):  # interleaved blocks of BLOCK steps: machine noise hits both arms alike
            started = time.perf_counter()
            for _ in range(BLOCK):
                train_step(plain, plain_opt, batch)
            plain_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            for _ in range(BLOCK):
                controlled_step(step)
                step += 1
            ctrl_times.append(time.perf_counter() - started)
        control.close()
        assert ctrl.group_ranks == plain.group_ranks, "the hold policy must keep the ranks equal"
        decisions = len((Path(tmp) / "log" / "decisions.jsonl").read_text().splitlines())
    ratio = statistics.median(ctrl_times) / statistics.median(plain_times)
    total = sum(ctrl_times) / sum(plain_times)
    print(f"MiniLM-L6 batch 16 seq 64, learned controller every {EVERY} steps ({decisions} decisions), ranks "
          f"{plain.group_ranks} in both arms")
    print(f"  step time with controller / plain PEFT LoRA: median of blocks {ratio:.3f}, overall {total:.3f}"
          f"  (target <= 1.01)")


if __name__ == "__main__":
    main()
