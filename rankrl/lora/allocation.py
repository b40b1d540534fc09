"""An allocation is group ranks plus frozen flags: apply one to a model, and read how deep its backward reaches."""

from __future__ import annotations

import torch

from rankrl.lora.ranked import RankedLoRA


def apply_allocation(rl: RankedLoRA, ranks: list[int], frozen: list[bool],
                     optimizer: torch.optim.Optimizer | None = None) -> None:
    """Give ``rl`` these group ranks and frozen flags, repairing ``optimizer``: the one way a decision lands.

    Freezes go first (they only free memory), then the resize, then thaws.
    """
    now = rl.frozen_groups
    freeze = [g for g, (was, want) in enumerate(zip(now, frozen, strict=True)) if want and not was and ranks[g] > 0]
    thaw = [g for g, (was, want) in enumerate(zip(now, frozen, strict=True)) if was and not want and ranks[g] > 0]
    if freeze:
        rl.freeze(freeze, optimizer=optimizer)
    rl.set_group_ranks(ranks, optimizer=optimizer)
    if thaw:
        rl.thaw(thaw, optimizer=optimizer)


def backward_depth(rl: RankedLoRA) -> float:
    """Fraction of the depth blocks from the lowest one with a training adapter to the top (0: none trains).

    Autograd goes no lower than the lowest trainable parameter, so this is how far the backward pass
    reaches: a deterministic proxy of the step time that freezing and rank 0 save.
    """
    per_block = 2 if rl.split_by_kind else 1
    blocks = rl.num_groups // per_block
    frozen = rl.frozen
    training = [rl.groups[name] // per_block for name, rank in rl.ranks.items() if rank > 0 and name not in frozen]
    return (blocks - min(training)) / blocks if training else 0.0
