"""``RankRLCallback``: a thin Hugging Face ``Trainer`` wrapper over :class:`~rankrl.deploy.RankControl`.

* ``on_train_begin``: loads the control state when the Trainer resumes from a checkpoint, then
  :meth:`RankControl.setup` on a batch of the train set (every check, before the first step);
* ``on_pre_optimizer_step``: gradients are complete (after accumulation and clipping): importance;
* ``on_step_end``: ``state.global_step`` counts optimizer steps, not micro-batches, so with gradient
  accumulation the decisions still fall on optimizer steps ``every``, ``2*every``, ...; the resize repairs
  the Trainer's (accelerate-wrapped) optimizer, and each decision is appended to ``state.log_history``;
* ``on_log`` / ``on_evaluate``: the logged ``loss`` and the ``eval_accuracy`` metric feed the signals. The
  Trainer logs after ``on_step_end``, so a decision sees the losses logged up to the previous step;
* ``on_save``: ``rankrl_control.json`` (and the signal trackers' EMAs, ``rankrl_signals.safetensors``) go
  into ``output_dir/checkpoint-<step>``; a resume restores both;
* ``on_train_end``: the adapter is saved as plain PEFT to ``adapter_dir`` (default ``output_dir/adapter``).

Under ``torchrun`` only the world's process zero writes logs, control states and the adapter; attach a
:class:`~rankrl.deploy.distributed.DataParallelSync` to the control so that all processes resize as one.

To resume, resize the model first (:func:`~rankrl.deploy.restore_ranks_from_checkpoint`), then call
``trainer.train(resume_from_checkpoint=...)``; see :mod:`rankrl.deploy.checkpoint`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging

from rankrl.controllers.learned import LearnedController
from rankrl.deploy.checkpoint import (
    CheckpointError,
    align_optimizer,
    read_control_state,
    read_signal_state,
    save_control_state,
)
from rankrl.deploy.control import RankControl

logger = logging.get_logger(__name__)
LOG_SUBDIR = "rankrl"


class RankRLCallback(TrainerCallback):
    """Drive a :class:`RankControl` from a ``transformers.Trainer`` (``callbacks=[RankRLCallback(control)]``).

    Args:
        control: The deployment; pass ``rl.model`` of its ``RankedLoRA`` to the Trainer. Without a
            ``log_dir`` it logs to ``output_dir/rankrl``; without ``total_steps`` it takes ``max_steps``.
        batch: The batch on which memory is measured; default the first ``per_device_train_batch_size``
            rows of the train set, collated by the Trainer's collator (the data order is not disturbed).
        accuracy_key: Metric read on evaluation.
        adapter_dir: Where the final adapter goes; default ``output_dir/adapter``. ``False``: not saved.
        checkpoint_dir: The checkpoint a resumed run continues from; default
            ``output_dir/checkpoint-<global_step>`` when the Trainer starts at a step above 0.
    """

    def __init__(self, control: RankControl, *, batch: dict | None = None, accuracy_key: str = "eval_accuracy",
                 adapter_dir: str | Path | bool | None = None, checkpoint_dir: str | Path | None = None) -> None:
        self.control = control
        self.batch = batch
        self.accuracy_key = accuracy_key
        self.adapter_dir = adapter_dir
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.resumed_from: Path | None = None
        self._signals: dict | None = None  # tracker state of a resumed checkpoint, loaded after setup

    # ------------------------------------------------------------------ start
    def on_train_begin(self, args, state, control, model=None, optimizer: torch.optim.Optimizer | None = None,
                       train_dataloader=None, **kwargs):
        rc = self.control
        if rc.log_dir is None and state.is_world_process_zero:  # data parallel: one process writes the logs
            rc.log_dir = Path(args.output_dir) / LOG_SUBDIR
        if rc.total_steps is None and state.max_steps and state.max_steps > 0:
            rc.total_steps = int(state.max_steps)
        if state.global_step > 0:
            self._resume(args, state, model, optimizer)
        elif isinstance(rc.controller, LearnedController) and rc.reader.loss.evals == 0:
            warnings.warn("A learned policy makes its first decision (before step 1) on the accuracy before "
                          "training, as in the environment it was trained in, and none was recorded: it sees 0. "
                          "Call control.record_eval(trainer.evaluate()['eval_accuracy'], 0) before "
                          "trainer.train().", stacklevel=3)
        rc.setup(optimizer, self.batch if self.batch is not None else _first_batch(train_dataloader, args))
        if self._signals is not None:  # after setup: its measuring pass must not count as a sample
            rc.reader.load_state_dict(self._signals)
            self._signals = None

    def _resume(self, args, state, model, optimizer: torch.optim.Optimizer) -> None:
        directory = self.checkpoint_dir or Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        saved = read_control_state(directory)
        if saved is None:
            warnings.warn(f"Resuming at step {state.global_step} without {directory}/rankrl_control.json: the "
                          "controller starts afresh from the current ranks.", stacklevel=3)
            return
        if saved["module_ranks"] != self.control.rl.ranks:
            raise CheckpointError(f"The model's ranks differ from those of {directory}. Call "
                                  "restore_ranks_from_checkpoint(rl, checkpoint) before "
                                  "trainer.train(resume_from_checkpoint=...), so that the Trainer loads the "
                                  "adapter and optimizer into tensors of the saved shapes.")
        if saved.get("step") != state.global_step:
            raise CheckpointError(f"{directory} holds the control state of step {saved.get('step')}, but the Trainer "
                                  f"resumes at step {state.global_step}; pass the matching checkpoint_dir.")
        self.control.load_state_dict(saved, optimizer=optimizer)
        if saved.get("optimizer_params") and optimizer is not None:
            align_optimizer(optimizer, model, saved["optimizer_params"])
        self.control.truncate_log(state.global_step)
        self._signals = read_signal_state(directory, saved)
        self.resumed_from = directory

    # ------------------------------------------------------------------ steps
    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.control.after_backward()

    def on_step_end(self, args, state, control, optimizer: torch.optim.Optimizer | None = None, **kwargs):
        applied = self.control.step(state.global_step, optimizer=optimizer)
        if applied is None:
            return
        entry = {f"rankrl/group{g}_rank": rank for g, rank in enumerate(applied.ranks)}
        entry.update({"rankrl/memory_mib": (self.control.last_used or 0) / 2**20,
                      "rankrl/wall_hit": bool(applied.clipped), "rankrl/reason": applied.decision.reason,
                      "step": state.global_step})
        state.log_history.append(entry)
        logger.info(f"rankrl step {state.global_step}: ranks {applied.before} -> {applied.ranks} "
                    f"({applied.decision.reason})")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.control.record_loss(logs["loss"], state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and self.accuracy_key in metrics:
            self.control.record_eval(metrics[self.accuracy_key], state.global_step)

    # ------------------------------------------------------------------ checkpoints and end
    def on_save(self, args, state, control, model=None, optimizer: torch.optim.Optimizer | None = None, **kwargs):
        directory = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if directory.is_dir() and state.is_world_process_zero:
            save_control_state(directory, self.control.state_dict(), optimizer=optimizer, model=model,
                               signals=self.control.reader.state_dict())

    def on_train_end(self, args, state, control, **kwargs):
        if self.adapter_dir is False or not state.is_world_process_zero:
            return
        if not any(self.control.rl.group_ranks):
            warnings.warn("Every group ended at rank 0: there is no LoRA adapter to save.", stacklevel=2)
            return
        self.control.finish(Path(self.adapter_dir) if self.adapter_dir else Path(args.output_dir) / "adapter")


def _first_batch(loader, args) -> dict:
    """A batch of the first rows of the Trainer's train set, collated without touching the loader's order."""
    if loader is None:
        raise ValueError("RankRLCallback needs a batch to measure memory: pass batch=... (no train dataloader).")
    dataset, collate = getattr(loader, "dataset", None), getattr(loader, "collate_fn", None)
    size = int(getattr(args, "per_device_train_batch_size", 8) or 8)
    if dataset is not None and collate is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        return collate([dataset[i] for i in range(min(size, len(dataset)))])
    with torch.random.fork_rng():  # an iterable loader: draw one batch without moving the data order's RNG
        return next(iter(loader))
