"""Fixtures of the signal tests."""

from __future__ import annotations

import pytest
import torch

from rankrl import RankedLoRA

from .helpers import attach


@pytest.fixture
def rl() -> RankedLoRA:
    return attach()


@pytest.fixture
def optimizer(rl):
    return torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and 2 OpenMP threads stall badly when other processes are busy."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
