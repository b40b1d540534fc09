"""Periodic checkpoints of a ``rankrl finetune`` run, and resuming from the newest good one.

A checkpoint is a directory ``checkpoints/step_<n>/`` holding ``tensors.safetensors`` (the trainable and
frozen adapter weights at their current ranks, the optimizer's moments, the importance EMAs, the torch RNG)
and ``state.json`` (module ranks, frozen modules, optimizer parameter order and hyperparameters, schedule,
:class:`RankControl` state with the controller's, the loss and input-variance trackers, the loop's counters,
and a SHA-256 of the tensors).
Data order is a pure function of ``(seed, step)`` (:meth:`FineTuneSession.batch_indices`), so no iterator
state is needed: a resumed run takes the very batches the interrupted one would have taken.

Each checkpoint is written into a hidden temporary directory and renamed into place, so a kill leaves either
a whole checkpoint or none; loading checks the checksum and falls back to the previous checkpoint with a
message. Only files are read: ``torch.load`` and unpickling are never used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from rankrl.runs import file_sha256

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"
TENSORS_FILE = "tensors.safetensors"
FORMAT = 1
KEEP = 2


class ResumeError(ValueError):
    """No usable checkpoint, or one that does not fit the run."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: its directory, JSON state and tensors."""

    path: Path
    state: dict
    tensors: dict[str, torch.Tensor]

    @property
    def step(self) -> int:
        return int(self.state["step"])


def save_checkpoint(run_dir: Path, session, control, loop: dict, keep: int = KEEP) -> Path:
    """Write the run's state after optimizer step ``session.step``; keep the newest ``keep`` checkpoints."""
    from safetensors.torch import save_file

    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    snapshot = session.checkpoint()
    tensors: dict[str, torch.Tensor] = {f"weights/{k}": v.contiguous() for k, v in snapshot["weights"].items()}
    optimizer = snapshot["optimizer"]
    state_keys: dict[str, dict] = {}
    for index, values in optimizer["state"].items():
        state_keys[str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer/{index}/{key}"] = value.contiguous()
                state_keys[str(index)][key] = None
            else:
                state_keys[str(index)][key] = value
    tensors["rng/torch"] = snapshot["torch_rng"]
    signals = control.reader.state_dict()
    tensors.update({f"signals/{k}": v.contiguous() for k, v in signals["tensors"].items()})
    step = int(snapshot["step"])
    final = root / f"step_{step}"
    for stale in root.glob(".step_*.tmp-*"):  # left by a kill during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".step_{step}.tmp-{os.getpid()}"
    tmp.mkdir()
    save_file(tensors, str(tmp / TENSORS_FILE))
    state = {
        "format": FORMAT, "step": step, "seed": snapshot["seed"], "module_ranks": snapshot["ranks"],
        "frozen": list(snapshot.get("frozen", [])),
        "optimizer_param_names": snapshot["optimizer_param_names"],
        "optimizer_param_groups": [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
                                   for g in optimizer["param_groups"]],
        "optimizer_state": state_keys, "scheduler": snapshot["scheduler"],
        "control": control.state_dict(), "signals": signals["values"], "loop": loop,
        "memory_crossings": control.memory.crossings_state(),
        "tensors_sha256": file_sha256(tmp / TENSORS_FILE),
    }
    (tmp / STATE_FILE).write_text(json.dumps(state, default=_json_default) + "\n")
    for path in tmp.iterdir():
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, newest first (temporary ones are not listed)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    found = []
    for path in root.glob("step_*") if root.is_dir() else []:
        match = re.fullmatch(r"step_(\d+)", path.name)
        if match and path.is_dir():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def load_latest_checkpoint(run_dir: Path, say=print) -> Checkpoint:
    """The newest checkpoint that reads back whole; ``say`` reports every one skipped and why.

    Raises:
        ResumeError: none is usable.
    """
    from safetensors.torch import load_file

    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise ResumeError(f"{run_dir} has no checkpoints ({CHECKPOINT_DIR}/step_*); it was interrupted before the "
                          "first one. Start it again with a new --out.")
    for path in candidates:
        try:
            state = json.loads((path / STATE_FILE).read_text())
            if state.get("format") != FORMAT:
                raise ValueError(f"format {state.get('format')!r}")
            if file_sha256(path / TENSORS_FILE) != state["tensors_sha256"]:
                raise ValueError("tensors do not match their checksum")
            return Checkpoint(path, state, load_file(str(path / TENSORS_FILE)))
        except Exception as err:  # any damage: fall back to the previous checkpoint
            say(f"checkpoint {path} is unusable ({type(err).__name__}: {err}); trying the previous one")
    raise ResumeError(f"No usable checkpoint in {run_dir / CHECKPOINT_DIR} (all damaged); start the run again.")


def restore_checkpoint(checkpoint: Checkpoint, session, control, batch: dict) -> None:
    """Return ``session`` and ``control`` to ``checkpoint``: ranks, weights, optimizer, schedule, controller,
    signal trackers and RNG, in the order that makes the next step the one the interrupted run would take."""
    state, tensors = checkpoint.state, checkpoint.tensors
    control.load_state_dict(state["control"], optimizer=session.optimizer)
    weights = {k[len("weights/"):]: v for k, v in tensors.items() if k.startswith("weights/")}
    optimizer_state = {}
    for index, keys in state["optimizer_state"].items():
        optimizer_state[int(index)] = {key: tensors[f"optimizer/{index}/{key}"] if value is None else value
                                       for key, value in keys.items()}
    groups = []
    for group in state["optimizer_param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    snapshot = {
        "ranks": state["module_ranks"], "frozen": state.get("frozen", []), "weights": weights, "seed": state["seed"],
        "step": state["step"],
        "optimizer": {"state": optimizer_state, "param_groups": groups},
        "optimizer_param_names": state["optimizer_param_names"], "scheduler": state["scheduler"],
        "torch_rng": tensors["rng/torch"],
    }
    if set(weights) - {n for n, _ in session.rl.model.named_parameters()}:
        raise ResumeError(f"{checkpoint.path} holds other parameters than this run's model.")
    session.restore(snapshot)
    control.setup(session.optimizer, batch)
    # After setup, whose measuring pass would otherwise count as an input-variance sample.
    prefix = "signals/"
    signal_tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    control.reader.load_state_dict({"values": state["signals"], "tensors": signal_tensors})
    if state.get("memory_crossings") is not None:  # measuring passes the interrupted run had cached
        control.memory.load_crossings_state(state["memory_crossings"])
    torch.set_rng_state(tensors["rng/torch"])
    control.truncate_log(checkpoint.step)


def _json_default(value):
    if torch.is_tensor(value):
        return value.item() if value.numel() == 1 else value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = ["Checkpoint", "ResumeError", "list_checkpoints", "load_latest_checkpoint",
           "restore_checkpoint", "save_checkpoint"]
