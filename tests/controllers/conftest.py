"""Fixtures of the controller tests: a tiny fine-tuning session per module."""

from __future__ import annotations

import pytest

from rankrl.session import FineTuneSession, SessionConfig

TINY = SessionConfig(model="tiny", task="synthetic:keyword?n_train=256&n_eval=64", batch_size=8, max_length=32,
                     num_groups=2, rank=4, eval_size=48)


@pytest.fixture(scope="module")
def session() -> FineTuneSession:
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
