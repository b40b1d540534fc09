"""Assign LoRA modules to layer groups: G groups by depth, optionally split by module kind.

A *group* is the unit a rank controller acts on: the environment's action has one rank delta per group.
Groups are contiguous blocks of transformer layers (group ``g`` holds layers ``[g*L/G, (g+1)*L/G)``); with
``split_by_kind`` each depth block is split again into its attention and MLP modules, so that
``num_groups`` depth blocks give ``2 * num_groups`` groups ordered ``(depth 0 attn, depth 0 mlp, ...)``.
"""

from __future__ import annotations

import re

_LAYER_INDEX = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")
_ATTENTION_HINTS = ("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value")


def layer_index(module_name: str) -> int | None:
    """The transformer layer a module belongs to: the first integer path component, or ``None``."""
    match = _LAYER_INDEX.search(module_name)
    return int(match.group(1)) if match else None


def module_kind(module_name: str) -> str:
    """``"attention"`` for attention projections (including their output projection), else ``"mlp"``."""
    lowered = module_name.lower()
    return "attention" if any(hint in lowered for hint in _ATTENTION_HINTS) else "mlp"


def assign_groups(module_names: list[str], num_groups: int, split_by_kind: bool = False) -> dict[str, int]:
    """Map each module name to its group index.

    Args:
        module_names: LoRA-targeted module names; each must contain a layer index.
        num_groups: Number of depth groups G (at most the number of layers).
        split_by_kind: Split every depth group into attention and MLP groups (2G groups in total).

    Raises:
        ValueError: on an empty module list, a module without a layer index, or G out of range.
    """
    if not module_names:
        raise ValueError("No LoRA modules to group: the target modules matched nothing.")
    indices = {}
    for name in module_names:
        index = layer_index(name)
        if index is None:
            raise ValueError(
                f"Cannot place module '{name}' in a layer group: its name has no layer index. "
                "Target only modules inside numbered transformer blocks."
            )
        indices[name] = index
    layers = sorted(set(indices.values()))
    if not 1 <= num_groups <= len(layers):
        raise ValueError(f"num_groups must be between 1 and the number of layers ({len(layers)}), got {num_groups}.")
    position = {layer: i for i, layer in enumerate(layers)}
    groups = {}
    for name, index in indices.items():
        depth_group = position[index] * num_groups // len(layers)
        if split_by_kind:
            groups[name] = 2 * depth_group + (0 if module_kind(name) == "attention" else 1)
        else:
            groups[name] = depth_group
    return groups
