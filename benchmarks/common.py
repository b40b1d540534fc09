"""Shared benchmark helpers: a real MiniLM-L6 LoRA setup, timing by medians of interleaved blocks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from rankrl import RankedLoRA, load_model

BATCH, SEQ = 16, 64


def minilm_lora(rank: int = 8, num_groups: int = 4, seed: int = 0) -> tuple[RankedLoRA, torch.optim.Optimizer]:
    """MiniLM-L6 (embedded weights) with LoRA on every attention and MLP linear layer, and AdamW."""
    torch.manual_seed(seed)
    loaded = load_model("default", num_labels=2, seed=seed)
    rl = RankedLoRA.attach(loaded.model, rank=rank, num_groups=num_groups)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-4)
    return rl, optimizer


def random_batch(batch: int = BATCH, seq: int = SEQ, vocab: int = 30522, seed: int = 0) -> dict:
    """Token ids drawn from the vocabulary (the step's cost does not depend on the text)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, vocab, (batch, seq), generator=generator)
    labels = torch.randint(0, 2, (batch,), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def train_step(rl: RankedLoRA, optimizer, batch: dict) -> float:
    """One full optimizer step: forward, backward, AdamW update, zero_grad."""
    rl.model.train()
    loss = rl.model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)
