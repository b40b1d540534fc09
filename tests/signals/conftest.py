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

