"""Deploy a rank controller in real fine-tuning: a plain-loop hook, a Trainer callback, ``finetune``, ``explain``.

* :mod:`.control`: :class:`RankControl`, the one object that decides, resizes and logs in any loop;
* :mod:`.callback`: :class:`RankRLCallback` for the Hugging Face ``Trainer`` (imported lazily);
* :mod:`.checkpoint`: ``rankrl_control.json`` and :func:`restore_ranks_from_checkpoint` for resuming;
* :mod:`.finetune`: :func:`run_finetune`, the ``rankrl finetune`` command;
* :mod:`.explain`: :func:`explain_run`, the ``rankrl explain`` command.
"""

from rankrl.deploy.checkpoint import (
    CONTROL_FILE,
    CheckpointError,
    align_optimizer,
    ranks_from_adapter_config,
    restore_ranks_from_checkpoint,
)
from rankrl.deploy.control import RankControl

__all__ = [
    "CONTROL_FILE",
    "CheckpointError",
    "RankControl",
    "RankRLCallback",
    "align_optimizer",
    "explain_run",
    "ranks_from_adapter_config",
    "restore_ranks_from_checkpoint",
    "run_finetune",
]


def __getattr__(name: str):
    if name == "RankRLCallback":  # keeps the transformers Trainer machinery out of the import
        from rankrl.deploy.callback import RankRLCallback

        return RankRLCallback
    if name == "run_finetune":
        from rankrl.deploy.finetune import run_finetune

        return run_finetune
    if name == "explain_run":
        from rankrl.deploy.explain import explain_run

        return explain_run
    raise AttributeError(f"module 'rankrl.deploy' has no attribute {name!r}")
