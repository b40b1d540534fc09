"""Live LoRA rank resizing on top of PEFT."""

from rankrl.lora.groups import assign_groups, layer_index, module_kind
from rankrl.lora.ranked import RankedLoRA, RankedLoRAError

__all__ = ["RankedLoRA", "RankedLoRAError", "assign_groups", "layer_index", "module_kind"]
