"""Find the live pieces of a LoRA-targeted module by name, whatever its current rank.

A resize in :class:`~rankrl.RankedLoRA` replaces the ``lora_A``/``lora_B`` linears (new Parameters) and, at
rank 0, replaces the whole ``LoraLayer`` in its parent by the plain base layer. The parent module and the
base layer itself are never replaced, so trackers hold the parent and look the child up again when they
need it; everything here is a few attribute lookups, cheap enough to run every training step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from rankrl.lora import RankedLoRA


@dataclass(frozen=True)
class ModuleSlot:
    """Where a targeted module lives: its parent and attribute name, which no resize changes."""

    name: str
    parent: nn.Module
    child: str

    def current(self) -> nn.Module:
        """The module now installed under this name (a ``LoraLayer`` or, at rank 0, the base layer)."""
        module = self.parent._modules[self.child]
        if module is None:
            raise LookupError(f"{self.name}: no module is installed under {self.child!r}.")
        return module


def module_slots(rl: RankedLoRA) -> list[ModuleSlot]:
    """One slot per module of ``rl`` in model order."""
    root = rl.root
    slots = []
    for name in rl.ranks:
        parent_name, _, child = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        slots.append(ModuleSlot(name, parent, child))
    return slots


def lora_factors(module: nn.Module, adapter: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(A, B)`` weights of a live LoRA module, ``None`` for a base layer (rank 0)."""
    if isinstance(module, LoraLayer) and adapter in module.lora_A:
        A, B = module.lora_A[adapter], module.lora_B[adapter]
        if isinstance(A, nn.Linear) and isinstance(B, nn.Linear):
            return A.weight, B.weight
    return None


def base_layer(module: nn.Module) -> nn.Module:
    """The frozen base layer under a LoRA wrapper, or the module itself at rank 0."""
    return module.get_base_layer() if isinstance(module, LoraLayer) else module


def in_out_features(module: nn.Module) -> tuple[int, int]:
    """``(in_features, out_features)`` of a LoRA wrapper, an ``nn.Linear`` or a GPT-2 ``Conv1D``."""
    if isinstance(module, LoraLayer):
        return in_out_features(module.get_base_layer())
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = getattr(module, "weight", None)
    if weight is not None and weight.dim() == 2:  # Conv1D stores (in, out)
        return int(weight.shape[0]), int(weight.shape[1])
    raise TypeError(f"Cannot tell the in/out features of a {type(module).__name__}.")


def base_weight(module: nn.Module) -> torch.Tensor:
    """The weight of the base layer under a LoRA wrapper (or of the module itself at rank 0)."""
    weight = base_layer(module).weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor.")
    return weight


def factor_dtype(module: nn.Module, adapter: str) -> torch.dtype:
    """dtype the LoRA factors have (or would have at rank 0: that of the base weight)."""
    factors = lora_factors(module, adapter)
    if factors is not None:
        return factors[0].dtype
    return base_weight(module).dtype
