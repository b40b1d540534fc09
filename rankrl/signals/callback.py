"""Feed a :class:`~rankrl.signals.reader.SignalReader` from a Hugging Face ``Trainer`` at the right moments.

* ``on_pre_optimizer_step``: gradients are complete (after accumulation, unscaling and clipping) and not yet
  zeroed, so importance is accumulated here. By ``on_step_end`` the Trainer has zeroed them.
* ``on_log``: the logged ``loss`` (the mean over ``logging_steps``; set ``logging_steps=1`` for per-step
  losses) goes to the loss tracker.
* ``on_evaluate``: the ``accuracy_key`` metric (default ``eval_accuracy``) goes to the eval tracker.
* ``on_train_begin``: the Trainer's optimizer is handed to the reader when it has none.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from rankrl.signals.reader import SignalReader


class SignalsCallback(TrainerCallback):
    """Trainer callback driving a :class:`SignalReader`.

    Args:
        reader: The reader to feed.
        accuracy_key: Metric name read on evaluation.
    """

    def __init__(self, reader: SignalReader, accuracy_key: str = "eval_accuracy") -> None:
        self.reader = reader
        self.accuracy_key = accuracy_key

    def on_train_begin(self, args, state, control, optimizer: torch.optim.Optimizer | None = None, **kwargs):
        if self.reader.optimizer is None and optimizer is not None:
            self.reader.optimizer = optimizer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.reader.after_backward()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.reader.update_loss(logs["loss"])

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and self.accuracy_key in metrics:
            self.reader.update_eval(metrics[self.accuracy_key])
