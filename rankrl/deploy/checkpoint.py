"""Checkpoints of a deployed controller: ``rankrl_control.json`` beside the Trainer's, ranks restored on resume.

Resuming a ``Trainer`` run whose ranks changed needs the model at the checkpoint's ranks *before*
``trainer.train(resume_from_checkpoint=...)``: the Trainer loads the adapter weights into the live modules
and the optimizer state by position, and both must have the checkpoint's shapes. So::

    rl = RankedLoRA.attach(model, rank=8, num_groups=4)            # as in the first run
    restore_ranks_from_checkpoint(rl, "out/checkpoint-600")          # resize to the saved ranks
    trainer = Trainer(model=rl.model, ..., callbacks=[RankRLCallback(control)])
    trainer.train(resume_from_checkpoint="out/checkpoint-600")       # the callback restores its state

Resizes leave the optimizer's parameters in another order than a fresh optimizer has (a group regrown from
rank 0 joins at the end), so the control file also records the optimizer's parameter names, and
:func:`align_optimizer` re-keys the state the Trainer loaded by position.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from rankrl.lora import RankedLoRA
from rankrl.lora.optim import unwrap_optimizer
from rankrl.runs import atomic_write, atomic_write_text

CONTROL_FILE = "rankrl_control.json"
SIGNALS_FILE = "rankrl_signals.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot restore this run (missing files, another model)."""


def save_control_state(directory: str | Path, state: dict, optimizer: torch.optim.Optimizer | None = None,
                       model: torch.nn.Module | None = None, signals: dict | None = None) -> Path:
    """Write ``state`` (:meth:`RankControl.state_dict`), the optimizer's parameter order and the signal trackers'
    state (:meth:`SignalReader.state_dict`: values in the JSON, EMAs in ``rankrl_signals.safetensors``)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    payload = dict(state)
    if optimizer is not None and model is not None:
        payload["optimizer_params"] = optimizer_param_names(optimizer, model)
    if signals is not None:
        payload["signals"] = signals["values"]
        tensors = {k: v.contiguous() for k, v in signals["tensors"].items()}
        atomic_write(directory / SIGNALS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    return atomic_write_text(directory / CONTROL_FILE, json.dumps(payload, indent=1) + "\n")


def read_signal_state(directory: str | Path, state: dict) -> dict | None:
    """The signal trackers' state saved beside ``state`` (``None`` for a checkpoint written without it)."""
    from safetensors.torch import load_file

    path = Path(directory) / SIGNALS_FILE
    if state.get("signals") is None or not path.exists():
        return None
    try:
        return {"values": state["signals"], "tensors": load_file(str(path))}
    except Exception as err:  # safetensors raises its own error type for a damaged file
        raise CheckpointError(f"{path} is corrupt ({err}); resume from another checkpoint.") from err


def read_control_state(directory: str | Path) -> dict | None:
    """The ``rankrl_control.json`` of a checkpoint directory, or ``None`` when it has none."""
    path = Path(directory) / CONTROL_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is corrupt ({err}); resume from another checkpoint.") from err


def ranks_from_adapter_config(rl: RankedLoRA, directory: str | Path) -> dict[str, int]:
    """Module ranks that a saved PEFT ``adapter_config.json`` describes.

    Read from ``r``, ``rank_pattern`` and ``exclude_modules``.
    """
    from peft.utils.other import get_pattern_key

    path = Path(directory) / ADAPTER_CONFIG
    if not path.exists():
        raise CheckpointError(f"{directory} has neither {CONTROL_FILE} nor {ADAPTER_CONFIG}; it is not a checkpoint "
                              "of a RankedLoRA model.")
    config = json.loads(path.read_text())
    pattern = config.get("rank_pattern") or {}
    excluded = config.get("exclude_modules") or []
    targets = config.get("target_modules") or []
    if isinstance(excluded, str) or isinstance(targets, str):
        raise CheckpointError(f"{path} uses regex target/exclude patterns; only adapters saved by RankedLoRA "
                              "(explicit module names) can be restored.")
    ranks = {}
    for name in rl.ranks:
        if name in excluded:
            ranks[name] = 0
        elif name in targets:
            key = get_pattern_key(pattern.keys(), name) if pattern else None
            ranks[name] = int(pattern[key]) if key in pattern else int(config["r"])
        else:
            raise CheckpointError(f"{path} does not describe module {name!r} of this model: another model?")
    return ranks


def restore_ranks_from_checkpoint(rl: RankedLoRA, checkpoint_dir: str | Path,
                                  optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Resize ``rl`` to the module ranks of a checkpoint; call it before ``trainer.train(resume_from_checkpoint=)``.

    Reads ``rankrl_control.json`` (written by :class:`~rankrl.deploy.RankRLCallback`) or, without it, the
    checkpoint's ``adapter_config.json``. Modules the control file lists as frozen are frozen again, so a
    Trainer built afterwards leaves them out of its optimizer as the interrupted run did.

    Args:
        rl: The model, freshly attached as in the interrupted run.
        checkpoint_dir: The Trainer checkpoint (``output_dir/checkpoint-<step>``).
        optimizer: An optimizer to repair, if one exists already (the Trainer creates its own later).

    Returns:
        Module name -> rank restored.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise CheckpointError(f"No checkpoint directory {checkpoint_dir}.")
    state = read_control_state(checkpoint_dir)
    frozen: list[str] = []
    if state is not None:
        ranks = {name: int(rank) for name, rank in state["module_ranks"].items()}
        unknown = set(ranks) ^ set(rl.ranks)
        if unknown:
            raise CheckpointError(f"{checkpoint_dir / CONTROL_FILE} is of another model: modules {sorted(unknown)[:3]} "
                                  "differ.")
        frozen = list(state.get("frozen", []))
        if any(ranks.get(name, 0) == 0 for name in frozen):
            raise CheckpointError(f"{checkpoint_dir / CONTROL_FILE} freezes modules it has at rank 0; it is corrupt.")
    else:
        ranks = ranks_from_adapter_config(rl, checkpoint_dir)
    rl.resize(ranks, optimizer=optimizer)
    rl.thaw(sorted(rl.frozen - set(frozen)), optimizer=optimizer)
    rl.freeze(frozen, optimizer=optimizer)
    return rl.ranks


def optimizer_param_names(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> list[list[str]]:
    """Per optimizer parameter group, the model's names of its parameters, in the optimizer's order."""
    names = {id(p): n for n, p in model.named_parameters()}
    inner = unwrap_optimizer(optimizer)
    return [[names.get(id(p), f"<unnamed {i}>") for i, p in enumerate(group["params"])] for group in inner.param_groups]


def align_optimizer(optimizer: torch.optim.Optimizer, model: torch.nn.Module, saved: list[list[str]]) -> bool:
    """Re-key optimizer state loaded by position from a checkpoint whose parameter order was ``saved``.

    ``torch.optim.Optimizer.load_state_dict`` pairs saved and live parameters by position; after live
    resizes, the saved order differs from the order of a freshly built optimizer. This puts the live
    parameters in the saved order, so each state follows the parameter it belongs to.

    Returns:
        Whether the order changed.

    Raises:
        CheckpointError: the groups hold other parameters than the saved ones, or a state's shape does not fit.
    """
    inner = unwrap_optimizer(optimizer)
    current = optimizer_param_names(optimizer, model)
    if current == saved:
        return False
    if [sorted(group) for group in current] != [sorted(group) for group in saved]:
        raise CheckpointError("The optimizer's parameter groups differ from the checkpoint's; were the model's ranks "
                              "restored (restore_ranks_from_checkpoint) before trainer.train(resume_from_checkpoint)?")
    named: Mapping = dict(model.named_parameters())
    new_state = {}
    for group, names in zip(inner.param_groups, saved, strict=True):
        params = group["params"]
        for position, name in enumerate(names):
            state = inner.state.get(params[position])
            if state:
                new_state[named[name]] = state
        group["params"] = [named[name] for name in names]
    for param, state in new_state.items():
        for key, value in state.items():
            if hasattr(value, "shape") and value.dim() > 0 and value.shape != param.shape:
                raise CheckpointError(f"Optimizer state {key!r} of shape {tuple(value.shape)} does not fit parameter "
                                      f"of shape {tuple(param.shape)}; the checkpoint is of other ranks.")
    inner.state.clear()
    inner.state.update(new_state)
    return True
