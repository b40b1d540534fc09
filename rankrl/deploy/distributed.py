"""Data-parallel fine-tuning with a rank controller: ``torchrun`` processes that resize as one.

PyTorch's ``DistributedDataParallel`` all-reduces gradients but knows nothing of parameters replaced after it
was built, and a controller run in every process could decide differently in each (their losses, batches
and memory readings differ). :class:`DataParallelSync` is the small layer between the two, plugged into
:class:`~rankrl.deploy.RankControl` as ``control.sync``:

* **settings**: at set-up, every process's controller settings are gathered and compared; a mismatch is one
  :class:`DistributedSettingsError` on every process (nothing trains, nothing is written);
* **signals**: each reading is averaged over the processes (one ``all_reduce`` of every number);
* **decision**: rank 0 alone runs the controller and broadcasts the applied decision as one small object
  (``broadcast_object_list``); the other processes apply exactly what they receive, so whatever an
  :class:`~rankrl.controllers.Applied` carries (ranks per group today, more fields later) is applied alike;
* **after a change**: the trainable parameters are broadcast from rank 0 (grown rows are drawn at random)
  and each tracked DDP wrapper is rebuilt *in place* around the new parameters. In place, because the HF
  ``Trainer`` holds its DDP model in a local variable of its training loop. The optimizer is repaired
  (re-keyed to the new tensors, moments carried) by ``RankedLoRA`` on every process.

A hand-written loop under ``torchrun --nproc-per-node 2 train.py``::

    torch.distributed.init_process_group("gloo")          # "nccl" on CUDA
    rl = RankedLoRA.attach(model, rank=8, num_groups=4)
    ddp = DistributedDataParallel(rl.model)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-3)
    control = RankControl(rl, make_controller("importance"), every=50, total_steps=1000,
                          log_dir="runs/mine" if torch.distributed.get_rank() == 0 else None)
    DataParallelSync(track=[ddp]).attach(control)
    control.setup(optimizer, first_local_batch)
    for step, batch in enumerate(local_batches, start=1):   # each process its shard of the global batch
        loss = ddp(**batch).loss
        loss.backward(); control.after_backward()
        optimizer.step(); optimizer.zero_grad()
        control.step(step, loss.item(), optimizer)         # ddp is rebuilt in place after a resize

With the HF ``Trainer``: ``DataParallelSync(track=[lambda: trainer.model_wrapped]).attach(control)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from rankrl.signals.reader import Signals

TIMEOUT_SECONDS = 300
"""Collective timeout of the process groups rankrl opens: a process that never arrives fails the others."""


class DistributedSettingsError(ValueError):
    """The ``torchrun`` processes disagree on the controller's settings; nothing was trained or written."""


def distributed_env() -> bool:
    """Whether this process was started by ``torchrun`` (or another launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(timeout_seconds: float = TIMEOUT_SECONDS) -> bool:
    """Open the default process group from ``torchrun``'s variables (gloo on CPU, NCCL on CUDA).

    Returns:
        Whether this call opened it (then close it with ``torch.distributed.destroy_process_group()``).
    """
    if not distributed_env() or dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds))
    return True


class DataParallelSync:
    """Keeps the rank controllers of data-parallel processes in lockstep (see the module docstring).

    Args:
        track: DDP wrappers to rebuild after each change, or zero-argument callables returning them
            (``lambda: trainer.model_wrapped``). Anything that is not a DDP module is skipped.
        src: The process that decides.
        group: The process group (default: the default group).
    """

    def __init__(self, track: Iterable[nn.Module | Callable[[], Any]] = (), src: int = 0, group=None) -> None:
        if not dist.is_initialized():
            raise RuntimeError(
                "DataParallelSync needs torch.distributed: call init_process_group first "
                "(or rankrl.deploy.distributed.init_from_env() under torchrun)."
            )
        self.tracked = list(track)
        self.src = src
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.rebuilds = 0

    @property
    def is_main(self) -> bool:
        """Whether this process decides (and, by convention, writes files)."""
        return self.rank == self.src

    def attach(self, control) -> DataParallelSync:
        """Plug into a :class:`~rankrl.deploy.RankControl` (before its ``setup``); returns ``self``."""
        control.sync = self
        return self

    def track(self, ddp: nn.Module | Callable[[], Any]) -> None:
        """Also rebuild this DDP wrapper (or the one this callable returns) after each change."""
        self.tracked.append(ddp)

    # ------------------------------------------------------------------ hooks of RankControl
    def check_settings(self, settings: dict) -> None:
        """Raise :class:`DistributedSettingsError` on every process unless all pass equal settings."""
        mine = json.loads(json.dumps(settings, sort_keys=True, default=str))
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, mine, group=self.group)
        differing = sorted({
            key
            for other in gathered
            for key in set(other) | set(mine)
            if other.get(key) != gathered[0].get(key)
        })
        if differing:
            detail = "; ".join(
                f"{key}: " + ", ".join(f"rank {r}={s.get(key)!r}" for r, s in enumerate(gathered))
                for key in differing
            )
            raise DistributedSettingsError(
                f"The {self.world_size} torchrun processes disagree on the rank "
                f"controller's settings ({detail}). Start every process with the same "
                "controller, policy and flags."
            )

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every process (a small picklable object)."""
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=self.src, group=self.group)
        return box[0]

    def reduce_signals(self, signals: Signals) -> Signals:
        """Every module, group and run-level feature averaged over the processes (one ``all_reduce``).

        The memory status stays the deciding process's own: memory is per process, and only rank 0 decides.
        """
        keys = [("scalars", None, key) for key in sorted(signals.scalars)]
        keys += [("groups", g, key) for g, features in enumerate(signals.groups) for key in sorted(features)]
        keys += [
            ("modules", name, key)
            for name in sorted(signals.modules)
            for key in sorted(signals.modules[name])
        ]
        values = torch.tensor([float(_lookup(signals, *k)) for k in keys], dtype=torch.float64)
        if dist.get_backend(self.group) == "nccl":
            values = values.cuda()
        dist.all_reduce(values, group=self.group)
        values = (values / self.world_size).cpu().tolist()
        scalars = dict(signals.scalars)
        groups = [dict(features) for features in signals.groups]
        modules = {name: dict(features) for name, features in signals.modules.items()}
        for (where, index, key), value in zip(keys, values, strict=True):
            target = scalars if where == "scalars" else groups[index] if where == "groups" else modules[index]
            target[key] = value
        return Signals(modules=modules, groups=groups, scalars=scalars, memory=signals.memory)

    def decide(self, compute: Callable[[], Any]) -> Any:
        """Run ``compute`` (the controller) on rank 0 only and return its result on every process."""
        return self.from_main(compute() if self.is_main else None)

    def after_change(self, rl, optimizer: torch.optim.Optimizer | None = None) -> None:
        """After an identical resize on every process: parameters from rank 0, DDP rebuilt in place."""
        with torch.no_grad():
            for parameter in rl.trainable_parameters():
                dist.broadcast(parameter.data, src=self.src, group=self.group)
        for item in self.tracked:
            ddp = item() if callable(item) and not isinstance(item, nn.Module) else item
            if isinstance(ddp, nn.parallel.DistributedDataParallel):
                rebuild_ddp(ddp)
                self.rebuilds += 1


def _lookup(signals: Signals, where: str, index, key: str) -> float:
    if where == "scalars":
        return signals.scalars[key]
    if where == "groups":
        return signals.groups[index][key]
    return signals.modules[index][key]


def rebuild_ddp(ddp: nn.parallel.DistributedDataParallel) -> nn.parallel.DistributedDataParallel:
    """Make ``ddp`` a fresh ``DistributedDataParallel`` of its module, in place, with the same options.

    DDP registers its gradient hooks and buckets on the parameters that exist when it is built; after a
    resize the module holds new tensors that the old reducer would never all-reduce. A new wrapper is built
    (which also broadcasts the module's state from rank 0) and its state replaces the old one's, so every
    reference to ``ddp`` (the Trainer's local ``model``) now drives the new reducer. The old reducer is
    released with its hooks.
    """
    # torch >= 2.13 renamed broadcast_buffers (forward_sync_buffers); older versions know only the first.
    if hasattr(ddp, "forward_sync_buffers"):
        buffers = {"forward_sync_buffers": ddp.forward_sync_buffers}
    else:
        buffers = {"broadcast_buffers": ddp.broadcast_buffers}
    fresh = nn.parallel.DistributedDataParallel(
        ddp.module,
        device_ids=ddp.device_ids,
        output_device=ddp.output_device,
        dim=ddp.dim,
        process_group=ddp.process_group,
        **buffers,
        bucket_cap_mb=ddp.bucket_bytes_cap / 2**20,
        find_unused_parameters=ddp.find_unused_parameters,
        gradient_as_bucket_view=ddp.gradient_as_bucket_view,
        static_graph=ddp.static_graph,
    )
    ddp.__dict__.update(fresh.__dict__)
    return ddp


def data_parallel_session(session, control) -> DataParallelSync | None:
    """Under ``torchrun``: shard ``session``'s batches, wrap its model in DDP and sync ``control``.

    ``rankrl finetune`` calls this before :meth:`RankControl.setup`; outside ``torchrun`` it returns ``None``
    and changes nothing. ``--batch-size`` stays the global batch: each of the N processes trains on 1/N of it.

    Raises:
        ValueError: the global batch does not split evenly over the processes.
    """
    if not distributed_env():
        return None
    init_from_env()
    rank, world = dist.get_rank(), dist.get_world_size()
    size = session.config.batch_size
    if size % world:
        raise ValueError(
            f"--batch-size {size} is the global batch and must split evenly over the {world} torchrun "
            f"processes; use a multiple of {world}."
        )
    session.shard = (rank, world)
    device = next(session.rl.model.parameters()).device
    ids = [device.index or 0] if device.type == "cuda" else None
    session.train_module = nn.parallel.DistributedDataParallel(session.rl.model, device_ids=ids)
    return DataParallelSync(track=[session.train_module]).attach(control)
