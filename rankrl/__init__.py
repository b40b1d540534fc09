"""rankrl: learn how to spend LoRA rank.

A Gymnasium environment wraps a LoRA fine-tuning run, a stable-baselines3 policy learns per-layer-group rank
allocation in it, and the trained policy then drives ordinary fine-tuning. Underneath, :class:`RankedLoRA`
changes LoRA ranks mid-training and physically frees the memory.
"""

import logging

# PEFT imports bitsandbytes whenever it is installed (the qlora extra), and on CPUs with AVX512-BF16
# bitsandbytes then tries to fetch an optional 4-bit CPU kernel from the hub and logs a warning when it
# cannot (with HF_HUB_OFFLINE, the `kernels` package warns about the trust check it skips), on every
# command, for users who never load a 4-bit model. Its plain CPU path works without that kernel.
for _noisy in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

from rankrl.env import LoRARankEnv, register_presets  # noqa: E402
from rankrl.lora import RankedLoRA, RankedLoRAError  # noqa: E402
from rankrl.memory import MemoryReport  # noqa: E402
from rankrl.models import load_model, load_tokenizer  # noqa: E402

register_presets()

__version__ = "0.1.0"

__all__ = ["LoRARankEnv", "MemoryReport", "RankedLoRA", "RankedLoRAError", "load_model", "load_tokenizer"]
