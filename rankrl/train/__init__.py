"""Offline policy training with stable-baselines3 (``rankrl train``)."""

from rankrl.train.agent_config import AgentConfig, load_agent_config
from rankrl.train.trainer import train_policy

__all__ = ["AgentConfig", "load_agent_config", "train_policy"]
