"""Cost of live rank changes and what rank 0 saves, on MiniLM-L6 (batch 16, seq 64), as same-run ratios.

1. Full reallocation of every LoRA module (all-linear, r 8 -> 16 -> 4, optimizer repaired each time) against
   one training step. Target: each reallocation costs at most one step (ratio <= 1).
2. Saved-activation bytes and step time with the bottom half of the groups at rank 0, against all groups at
   rank 8. Expect both ratios well under 1.

Run: ``.venv/bin/python benchmarks/bench_resize.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, minilm_lora, random_batch, timed, train_step  # noqa: E402


def reallocation_vs_step(repeats: int = 5) -> dict[str, float]:
    rl, optimizer = minilm_lora(rank=8)
    batch = random_batch()
    for _ in range(2):
        train_step(rl, optimizer, batch)  # warm-up and Adam state present
    steps, grow, shrink = [], [], []
    for _ in range(repeats):
        steps.append(timed(lambda: train_step(rl, optimizer, batch)))
        grow.append(timed(lambda: rl.resize({n: 16 for n in rl.ranks}, optimizer=optimizer)))
        train_step(rl, optimizer, batch)
        shrink.append(timed(lambda: rl.resize({n: 4 for n in rl.ranks}, optimizer=optimizer)))
        train_step(rl, optimizer, batch)
        rl.resize({n: 8 for n in rl.ranks}, optimizer=optimizer)
        train_step(rl, optimizer, batch)
    return {"step_s": median(steps), "grow_8_16": median(grow) / median(steps),
            "shrink_16_4": median(shrink) / median(steps), "modules": len(rl.ranks)}


def bottom_half_at_zero(repeats: int = 6) -> dict[str, float]:
    rl, optimizer = minilm_lora(rank=8, num_groups=4)
    batch = random_batch()
    full_ranks, half_ranks = [8, 8, 8, 8], [0, 0, 8, 8]
    figures = {}
    for label, ranks in (("full", full_ranks), ("half", half_ranks)):
        rl.set_group_ranks(ranks, optimizer=optimizer)
        figures[label] = rl.memory(optimizer=optimizer, batch=batch)
    times = {"full": [], "half": []}
    for _ in range(repeats):  # interleave the two configurations so machine noise hits both alike
        for label, ranks in (("full", full_ranks), ("half", half_ranks)):
            rl.set_group_ranks(ranks, optimizer=optimizer)
            train_step(rl, optimizer, batch)
            times[label].append(timed(lambda: train_step(rl, optimizer, batch)))
    return {
        "activation_ratio": figures["half"].activations / figures["full"].activations,
        "trainable_ratio": figures["half"].trainable_parameters / figures["full"].trainable_parameters,
        "step_time_ratio": median(times["half"]) / median(times["full"]),
        "full_activation_mib": figures["full"].activations / 2**20,
    }


def main() -> None:
    torch.set_num_threads(2)
    realloc = reallocation_vs_step()
    print(f"MiniLM-L6, {realloc['modules']} LoRA modules, batch 16, seq 64 "
          f"(train step median {realloc['step_s'] * 1000:.0f} ms, for scale only)")
    print(f"  full reallocation r8->16 / train step : {realloc['grow_8_16']:.3f}  (target <= 1)")
    print(f"  full reallocation r16->4 / train step : {realloc['shrink_16_4']:.3f}  (target <= 1)")
    half = bottom_half_at_zero()
    print("Bottom half of 4 groups at rank 0 vs all groups at rank 8")
    print(f"  saved-activation bytes ratio          : {half['activation_ratio']:.3f}"
          f"  (all-8 run saved {half['full_activation_mib']:.0f} MiB)")
    print(f"  trainable-parameter bytes ratio       : {half['trainable_ratio']:.3f}")
    print(f"  train step time ratio                 : {half['step_time_ratio']:.3f}")
    ok = realloc["grow_8_16"] <= 1 and realloc["shrink_16_4"] <= 1 and half["activation_ratio"] < 1
    print("RESULT:", "targets met" if ok else "targets NOT met")


if __name__ == "__main__":
    main()
