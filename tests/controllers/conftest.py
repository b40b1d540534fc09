"""Fixtures of the controller tests: one torch thread and a tiny fine-tuning session per module."""

from __future__ import annotations

import pytest
import torch

from rankrl.session import FineTuneSession, SessionConfig

TINY = SessionConfig(model="tiny", task="synthetic:keyword?n_train=256&n_eval=64", batch_size=8, max_length=32,
                     num_groups=2, rank=4, eval_size=48)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Other jobs share the two cores; two threads each thrash badly on tiny tensors."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def session(one_thread) -> FineTuneSession:
    """The tiny model (2 layers, 2 groups, rank 4); every :class:`Loop` resets it."""
    return FineTuneSession(TINY)


@pytest.fixture
def make_loop(session):
    """``make_loop(budget_frac=..., ...)`` -> a :class:`~.helpers.Loop` on the shared session (closed after)."""
    from .helpers import Loop

    loops = []

    def make(**options) -> Loop:
        loops.append(Loop(session, **options))
        return loops[-1]

    yield make
    for loop in loops:
        loop.close()
