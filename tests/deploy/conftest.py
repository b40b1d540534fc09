"""Fixtures of the deployment tests: one torch thread, tiny sessions and a tiny tokenised task."""

from __future__ import annotations

import pytest
import torch

from rankrl.session import SessionConfig

TASK = "synthetic:keyword?n_train=256&n_eval=64"
TINY = SessionConfig(model="tiny", task=TASK, batch_size=8, max_length=32, num_groups=2, rank=4, eval_size=48, lr=3e-3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Other jobs share the two cores; two threads each thrash badly on tiny tensors."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
