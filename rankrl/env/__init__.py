"""The Gymnasium environment: LoRA fine-tuning in which each step reallocates rank across layer groups."""

from rankrl.env.config import EnvConfig, RewardWeights, load_env_config
from rankrl.env.lora_rank_env import LoRARankEnv
from rankrl.env.observation import ObservationLayout, ObservationMismatchError
from rankrl.env.registration import env_id, register_presets

__all__ = [
    "EnvConfig",
    "LoRARankEnv",
    "ObservationLayout",
    "ObservationMismatchError",
    "RewardWeights",
    "env_id",
    "load_env_config",
    "register_presets",
]
