"""What freezing the bottom half of the groups saves, on MiniLM-L6 (batch 16, seq 64, 4 groups, rank 8).

Three configurations, measured in the same run:

* ``all``: every group trains at rank 8;
* ``frozen``: groups 0 and 1 frozen (``RankedLoRA.freeze``), their rank-8 factors kept;
* ``zero``: groups 0 and 1 at rank 0 (adapters dropped), for comparison.

Printed: saved-activation bytes and train step time (median of interleaved steps) of ``frozen`` and ``zero``
divided by ``all``, and the largest absolute logits difference across a freeze and a thaw of a trained
model (must be 0: a freeze changes no value).

Run: ``.venv/bin/python benchmarks/bench_freeze.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, minilm_lora, random_batch, timed, train_step  # noqa: E402

BOTTOM = [0, 1]
MB = 2**20


def logits(rl, batch: dict) -> torch.Tensor:
    rl.model.eval()
    with torch.no_grad():
        return rl.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def freeze_exactness(rl, optimizer, batch: dict) -> tuple[float, float]:
    """Max |logits difference| across a freeze and across the thaw that follows (on a trained model)."""
    before = logits(rl, batch)
    rl.freeze(BOTTOM, optimizer=optimizer)
    frozen = logits(rl, batch)
    rl.thaw(BOTTOM, optimizer=optimizer)
    thawed = logits(rl, batch)
    return (frozen - before).abs().max().item(), (thawed - frozen).abs().max().item()


def main(repeats: int = 9) -> None:
    torch.set_num_threads(1)  # two OpenMP threads stall whenever another process shares the cores
    batch = random_batch()
    rl, optimizer = minilm_lora(rank=8, num_groups=4)  # all <-> frozen by freeze/thaw
    zero, zero_optimizer = minilm_lora(rank=8, num_groups=4)
    zero.set_group_ranks([0, 0, 8, 8], optimizer=zero_optimizer)
    for _ in range(3):  # warm-up; trained B factors, so that a freeze has something to keep
        train_step(rl, optimizer, batch)
        train_step(zero, zero_optimizer, batch)
    across_freeze, across_thaw = freeze_exactness(rl, optimizer, batch)

    reports = {"all": rl.memory(optimizer=optimizer, batch=batch)}
    rl.freeze(BOTTOM, optimizer=optimizer)
    reports["frozen"] = rl.memory(optimizer=optimizer, batch=batch)
    rl.thaw(BOTTOM, optimizer=optimizer)
    reports["zero"] = zero.memory(optimizer=zero_optimizer, batch=batch)

    def configure(label: str):
        """Put ``rl`` in the configuration and return (model, optimizer) to step."""
        if label == "zero":
            return zero, zero_optimizer
        (rl.freeze if label == "frozen" else rl.thaw)(BOTTOM, optimizer=optimizer)
        return rl, optimizer

    labels = ["all", "frozen", "zero"]
    times: dict[str, list[float]] = {label: [] for label in labels}
    for i in range(repeats):  # interleaved, in a rotating order, so machine noise hits every configuration alike
        for label in labels[i % 3:] + labels[:i % 3]:
            model, opt = configure(label)
            train_step(model, opt, batch)  # untimed: the first step after a thaw creates Adam state
            times[label].append(timed(lambda model=model, opt=opt: train_step(model, opt, batch)))
    rl.thaw(BOTTOM, optimizer=optimizer)

    full = reports["all"]
    step = {label: median(values) for label, values in times.items()}
    print(f"MiniLM-L6, {len(rl.ranks)} LoRA modules, batch 16, seq 64, 4 groups at rank 8 "
          f"(all-training step median {step['all'] * 1000:.0f} ms, for scale only)")
    print(f"{'bottom half of 4 groups':<26}{'activations':>12}{'step time':>11}{'grads+optim':>13}"
          f"{'frozen adapter':>16}")
    for label, name in (("frozen", "frozen"), ("zero", "at rank 0")):
        report = reports[label]
        print(f"  {name + ' / all training':<24}{report.activations / full.activations:>12.3f}"
              f"{step[label] / step['all']:>11.3f}"
              f"{(report.gradients + report.optimizer_state) / (full.gradients + full.optimizer_state):>13.3f}"
              f"{report.frozen_adapter / MB:>12.2f} MiB")
    print(f"  all training saved {full.activations / MB:.1f} MiB of activations; frozen bottom half "
          f"{reports['frozen'].activations / MB:.1f}, rank-0 bottom half {reports['zero'].activations / MB:.1f}")
    print(f"max |logits difference| across a freeze: {across_freeze:g}, across the thaw: {across_thaw:g}")
    ok = across_freeze == 0 and across_thaw == 0 and reports["frozen"].activations < full.activations
    print("RESULT:", "freeze exact and activations reduced" if ok else "targets NOT met")


if __name__ == "__main__":
    main()
