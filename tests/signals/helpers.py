"""Test helpers: a tiny random BERT wrapped in RankedLoRA, a batch maker and a train-step helper."""

from __future__ import annotations

import torch

from rankrl import RankedLoRA, load_model


def make_batch(seed: int = 0, batch: int = 4, seq: int = 12, pad: int = 0) -> dict:
    """A deterministic classification batch; the last ``pad`` positions are padding."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, seq), generator=gen)
    mask = torch.ones_like(ids)
    if pad:
        mask[:, seq - pad:] = 0
        ids[:, seq - pad:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (batch,), generator=gen)}


def attach(rank: int = 4, num_groups: int = 2, seed: int = 0, **options) -> RankedLoRA:
    """A fresh tiny 2-layer BERT with LoRA on every linear of its blocks."""
    torch.manual_seed(seed)
    return RankedLoRA.attach(load_model("tiny", num_labels=2, seed=seed).model, rank=rank,
                             num_groups=num_groups, **options)


def train_steps(rl: RankedLoRA, optimizer, steps: int, tracker=None, seed: int = 0) -> None:
    """Plain training steps; ``tracker.accumulate()`` (when given) runs between backward and zero_grad."""
    for i in range(steps):
        loss = rl.model(**make_batch(seed + i)).loss
        loss.backward()
        if tracker is not None:
            tracker.accumulate()
        optimizer.step()
        optimizer.zero_grad()
