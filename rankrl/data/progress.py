"""Quiet ``datasets`` progress bars for rankrl's own small ``map`` calls.

The RL environment resets its fine-tuning session hundreds of times per process; every reset of a new
task runs a few ``Dataset.map`` calls, and their progress bars would flood stderr. Bars are therefore
shown only for datasets larger than :data:`PROGRESS_MIN_ROWS`, where a map takes long enough to be worth
watching. The environment variable ``HF_DATASETS_DISABLE_PROGRESS_BARS`` still has the last word.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import datasets

PROGRESS_MIN_ROWS = 50_000
"""Datasets with at most this many rows are mapped without a progress bar."""


@contextlib.contextmanager
def progress_for(num_rows: int) -> Iterator[None]:
    """Disable ``datasets`` progress bars inside the block when ``num_rows`` is small; restore afterwards."""
    quiet = num_rows <= PROGRESS_MIN_ROWS
    if (
        not quiet
        or datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is not None
        or datasets.are_progress_bars_disabled()
    ):
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()
