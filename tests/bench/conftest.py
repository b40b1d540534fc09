"""Shared settings of the benchmark tests: the tiny model, a small synthetic task, a handful of steps."""

from __future__ import annotations

from rankrl.bench import BenchConfig

TASK = "synthetic:keyword?n_train=128&n_eval=48"
TINY = dict(model="tiny", tasks=[TASK], seeds=1, steps=6, every=3, eval_size=48, batch_size=8, max_length=32,
            rank=4, num_groups=2, lr=3e-3, fixed_ranks=[2, 4])
"""BenchConfig settings of a run of about half a second on one CPU thread."""


def tiny_config(out, **overrides) -> BenchConfig:
    """A :class:`BenchConfig` of the tiny settings with ``out`` and any overrides."""
    return BenchConfig(**{**TINY, "out": str(out), **overrides})
