"""The `tiny` preset under budgets that bind, shared by the cloning and replay tests."""

from __future__ import annotations

from rankrl.env import EnvConfig, load_env_config


def moving_budget() -> EnvConfig:
    """Each episode draws 0.7-1.0 of the reference, and some step down: the teachers do more than hold."""
    return load_env_config("tiny", budget_range=[0.7, 1.0], traces=["constant", "step-down"])
