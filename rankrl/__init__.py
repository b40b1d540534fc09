"""rankrl: learn how to spend LoRA rank.

A Gymnasium environment wraps a LoRA fine-tuning run, a stable-baselines3 policy learns per-layer-group rank
allocation in it, and the trained policy then drives ordinary fine-tuning. Underneath, :class:`RankedLoRA`
changes LoRA ranks mid-training and physically frees the memory.
"""

from rankrl.env import LoRARankEnv, register_presets
from rankrl.lora import RankedLoRA, RankedLoRAError
from rankrl.memory import MemoryReport
from rankrl.models import load_model, load_tokenizer

register_presets()

__version__ = "0.1.0"

__all__ = ["LoRARankEnv", "MemoryReport", "RankedLoRA", "RankedLoRAError", "load_model", "load_tokenizer"]
