"""Shared settings of the deployment tests: the tiny session and task (one torch thread: tests/conftest.py)."""

from __future__ import annotations

from rankrl.session import SessionConfig

TASK = "synthetic:keyword?n_train=256&n_eval=64"
TINY = SessionConfig(model="tiny", task=TASK, batch_size=8, max_length=32, num_groups=2, rank=4, eval_size=48, lr=3e-3)
