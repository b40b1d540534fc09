"""Keep an optimizer working when LoRA parameters are replaced by tensors of another shape.

PyTorch optimizers hold their parameters by identity in ``param_groups`` and their state in
``optimizer.state[param]``; nothing in torch or PEFT moves either to a resized tensor. This module does,
for any ``torch.optim.Optimizer`` and for wrappers that expose the real one as ``.optimizer`` (the
``AcceleratedOptimizer`` that the Hugging Face ``Trainer`` uses).

Moment policy, per replaced parameter:

* **grow** (the basis is kept): every state tensor shaped like the parameter is carried over exactly on
  the kept rows/columns and zero on the new ones. When the kept columns of ``B`` were rescaled by
  ``c = s_old / s_new`` to fold a scaling change in, their gradient scales by ``1/c``, so first moments
  (``exp_avg``, ``momentum_buffer``) are divided by ``c`` and second moments (``*_sq``) by ``c**2``: the
  carried statistics are exactly those the new parameterisation would have accumulated. Scalar state such
  as Adam's ``step`` is kept.
* **shrink** (the basis rotates to singular vectors): the old moments describe directions that no longer
  exist, so the state of that parameter is dropped and the optimizer initialises it afresh on its next step.
* **remove** (rank 0): the parameter leaves its group and its state is freed.
* **freeze** (``RankedLoRA.freeze``): as remove; the parameter stays in the model with its values, but
  no longer trains, so it leaves the optimizer and its state is freed.
* **add** (growth from rank 0, or a thaw): the parameter joins the group that held LoRA parameters, with
  empty state. A parameter the optimizer holds already is left where it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def unwrap_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The innermost ``torch.optim.Optimizer`` behind wrappers such as accelerate's ``AcceleratedOptimizer``."""
    seen = 0
    while hasattr(optimizer, "optimizer") and isinstance(optimizer.optimizer, torch.optim.Optimizer) and seen < 8:
        optimizer = optimizer.optimizer
        seen += 1
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"Expected a torch optimizer (or a wrapper with .optimizer), got {type(optimizer).__name__}.")
    return optimizer


@dataclass
class ParamChange:
    """How one parameter is replaced.

    Attributes:
        old: The parameter leaving the optimizer (``None`` for an added one).
        new: The parameter entering it (``None`` for a removed one).
        mode: ``"grow"``, ``"shrink"``, ``"remove"``, ``"freeze"`` or ``"add"``.
        dim: Axis along which a grown parameter was extended (0 for ``A``, 1 for ``B``).
        moment_scale: Gradient scale ``1/c`` of the kept part of a grown parameter (see module docstring).
    """

    old: torch.Tensor | None
    new: torch.Tensor | None
    mode: str
    dim: int = 0
    moment_scale: float = 1.0


def _carry_state(state: dict, old: torch.Tensor, new: torch.Tensor, change: ParamChange) -> dict:
    new_state = {}
    old_shape = old.shape
    for key, value in state.items():
        if torch.is_tensor(value) and value.shape == old_shape:
            factor = change.moment_scale ** (2 if "sq" in key else 1)
            grown = value.new_zeros(new.shape)
            index = [slice(None)] * value.dim()
            index[change.dim] = slice(0, old_shape[change.dim])
            grown[tuple(index)] = value * factor
            new_state[key] = grown
        else:
            new_state[key] = value
    return new_state


def apply_param_changes(optimizer: torch.optim.Optimizer, changes: list[ParamChange],
                        fallback_group: int | None = None) -> None:
    """Move ``changes`` into ``optimizer`` (or its wrapped optimizer) following the moment policy above.

    Args:
        optimizer: A torch optimizer or a wrapper exposing it as ``.optimizer``.
        changes: Parameter replacements from one resize.
        fallback_group: Group for added parameters when no replaced LoRA parameter pins one; defaults to the
            group holding the most parameters that require grad.
    """
    inner = unwrap_optimizer(optimizer)
    location = {}
    for group_index, group in enumerate(inner.param_groups):
        for position, param in enumerate(group["params"]):
            location[id(param)] = (group_index, position)

    removed: list[tuple[int, int]] = []
    additions: list[torch.Tensor] = []
    home_group = None
    for change in changes:
        if change.old is not None and id(change.old) in location:
            group_index, position = location[id(change.old)]
            home_group = group_index if home_group is None else home_group
            old_state = inner.state.pop(change.old, None)
            if change.mode in ("remove", "freeze"):
                removed.append((group_index, position))
                continue
            inner.param_groups[group_index]["params"][position] = change.new
            if change.mode == "grow" and old_state and change.new is not None:
                inner.state[change.new] = _carry_state(old_state, change.old, change.new, change)
        elif change.new is not None and id(change.new) not in location:
            additions.append(change.new)

    for group_index, position in sorted(removed, reverse=True):
        del inner.param_groups[group_index]["params"][position]
    if additions:
        if home_group is None:
            home_group = fallback_group if fallback_group is not None else _largest_group(inner)
        inner.param_groups[home_group]["params"].extend(additions)


def _largest_group(optimizer: torch.optim.Optimizer) -> int:
    sizes = [sum(p.requires_grad for p in group["params"]) for group in optimizer.param_groups]
    return max(range(len(sizes)), key=sizes.__getitem__) if sizes else 0


def optimizer_state_bytes(optimizer: torch.optim.Optimizer | None) -> int:
    """Bytes held by the optimizer's state tensors (each storage counted once)."""
    if optimizer is None:
        return 0
    inner = unwrap_optimizer(optimizer)
    storages = {}
    for state in inner.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                storage = value.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())
