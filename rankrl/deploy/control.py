"""``RankControl``: deploy a rank controller in any training loop (plain PyTorch, or the HF ``Trainer``).

One object owns the :class:`~rankrl.signals.SignalReader`, the controller and the logs. Every ``every``
optimizer steps it reads the signals, builds the :class:`~rankrl.controllers.ControllerContext` exactly as
the environment builds its observation, lets the controller decide through the memory wall, resizes the
model and repairs the optimizer (``RankedLoRA.set_group_ranks``), re-measures memory and writes one line of
``decisions.jsonl`` plus TensorBoard scalars. A hand-written loop::

    rl = RankedLoRA.attach(model, rank=8, num_groups=4)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-3)
    control = RankControl(rl, make_controller("importance"), every=50, budget_mb=900, total_steps=1000,
                          log_dir="runs/mine")
    control.setup(optimizer, first_batch)       # every check (policy, budget) before the first step
    for step, batch in enumerate(loader, start=1):
        loss = rl.model(**batch).loss
        loss.backward()
        control.after_backward()                # gradients exist only now (importance)
        optimizer.step(); optimizer.zero_grad()
        control.step(step, loss.item(), optimizer)   # decides, resizes and logs every 50 steps
    control.finish("runs/mine/adapter")         # a plain PEFT adapter (rank_pattern)

The Hugging Face ``Trainer`` wrapper is :class:`rankrl.deploy.RankRLCallback`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from rankrl.controllers import (
    DECISIONS_FILE,
    Applied,
    BudgetTooSmallError,
    ControllerContext,
    DecisionLog,
    RankController,
    decision_record,
    prepare_controller,
)
from rankrl.controllers.base import MIB
from rankrl.lora import RankedLoRA
from rankrl.signals import MemoryBudget, SignalReader

UNBOUNDED = 2**62
"""Budget of the internal memory meter when the run has none, until :meth:`RankControl.setup` sets it to the
memory at the start ranks: the reference of the memory features (there is still no wall)."""
MAX_PENDING_SCALARS = 512
"""TensorBoard scalars queued between decisions before they are written anyway (see ``RankControl._scalar``)."""
STATE_FORMAT = 1
TB_DIR = "tb"


class RankControl:
    """A rank controller deployed in a training loop: decide every ``every`` optimizer steps, resize, log.

    Args:
        rl: The model being trained.
        controller: The controller (:func:`rankrl.controllers.make_controller`).
        every: Optimizer steps between decisions (decisions at steps ``every``, ``2*every``, ...).
        budget_mb: Memory budget in MiB (the hard wall), or ``None`` for an unbounded run.
        budget_frac: A wall at this fraction of the memory measured at the start ranks (by :meth:`setup`, in
            ``memory_scope``), the way the environment sets its budget (``budget_frac`` of a preset). Ignored
            when ``budget_mb`` is given. ``rankrl.deploy.finetune.with_policy_defaults`` reads the fraction
            a learned policy was trained with.
        total_steps: Planned optimizer steps (needed by scheduled controllers such as ``importance``).
        log_dir: Directory of ``decisions.jsonl`` and ``tb/``; ``None`` writes no files. Created lazily, at
            the first log entry. TensorBoard scalars between decisions (``train/loss``, ``eval/accuracy``)
            are queued and written at the next decision, :meth:`flush`, :meth:`finish` or :meth:`close`.
        memory_scope: ``"total"`` (everything, frozen base included) or ``"adapter"`` (rank-dependent part).
        r_max: Largest group rank; default twice the largest starting group rank.
        rank_step: Rank granularity; default ``max(1, r_max // 8)``.
        spec: Controller spec recorded in the logs (default the controller's name).
        **reader_options: Further :class:`~rankrl.signals.SignalReader` options.

    Attributes:
        reader: The signal reader (its input-variance hooks are installed at construction).
        budget: The run's :class:`MemoryBudget`, ``None`` when unbounded.
        step_count: Last optimizer step seen by :meth:`step`.
        decisions: Decisions taken so far.
        last_applied: The last :class:`Applied`.
        peak_used: Largest memory measured so far (bytes, in ``memory_scope``).
        last_used: Memory measured after the last decision (or at set-up).
        mean_used: Memory in force during the optimizer steps seen so far, averaged over the steps (bytes):
            the time integral the environment's memory penalty charges, where ``peak_used`` is its maximum.
    """

    def __init__(self, rl: RankedLoRA, controller: RankController, *, every: int, budget_mb: float | None = None,
                 budget_frac: float | None = None, total_steps: int | None = None, log_dir: str | Path | None = None,
                 memory_scope: str = "total", r_max: int | None = None, rank_step: int | None = None, spec: str | None = None,
                 **reader_options) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive number of optimizer steps, got {every!r}.")
        if budget_mb is not None and not (math.isfinite(budget_mb) and budget_mb > 0):
            raise ValueError(f"The memory budget must be a positive number of MiB, got {budget_mb!r}.")
        if budget_frac is not None and not (math.isfinite(budget_frac) and budget_frac > 0):
            raise ValueError(f"budget_frac must be a positive fraction of the start memory, got {budget_frac!r}.")
        self.rl = rl
        self.controller = controller
        self.spec = spec or controller.name
        self.every = every
        self.total_steps = total_steps
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.r_max = int(r_max) if r_max is not None else 2 * max(max(rl.group_ranks), 1)
        self.rank_step = int(rank_step) if rank_step is not None else max(1, self.r_max // 8)
        budget_bytes = int(budget_mb * MIB) if budget_mb is not None else UNBOUNDED
        self.reader = SignalReader(rl, budget_bytes=budget_bytes, memory_scope=memory_scope,
                                   rank_step=self.rank_step, **reader_options)
        self.budget_frac = budget_frac if budget_mb is None else None
        bounded = budget_mb is not None or self.budget_frac is not None
        self.budget: MemoryBudget | None = self.reader.budget if bounded else None
        self.optimizer = None
        self.batch: dict | None = None
        self.ready = False
        self.step_count = 0
        self.decisions = 0
        self.last_decision_step: int | None = None
        self.last_change: list[float] | None = None
        self.last_applied: Applied | None = None
        self.peak_used: int | None = None
        self.last_used: int | None = None
        self.start_fit: list[int] | None = None
        self._memory_sum = 0
        self._memory_steps = 0
        self._saved_reference: int | None = None  # memory reference (or relative wall) of a resumed run
        self._log: DecisionLog | None = None
        self._writer = None
        self._pending_scalars: list[tuple[str, float, int]] = []
        # Data-parallel processes (torchrun): a rankrl.deploy.distributed.DataParallelSync, or None.
        self.sync = None

    # ------------------------------------------------------------------ set-up
    @property
    def memory(self) -> MemoryBudget:
        """The memory meter (the budget, or an unbounded one that only measures)."""
        return self.reader.budget

    def setup(self, optimizer, batch: dict) -> int | None:
        """Measure memory on a real batch and run every check before training starts.

        A policy for another observation layout or number of groups, a missing or corrupt policy file, a
        controller that needs a budget or a schedule it lacks, and a budget below the smallest configuration
        the controller can train in all raise here, before the first step. If the starting ranks exceed the
        budget, the lowest live groups are shrunk by ``rank_step`` until they fit (:attr:`start_fit`).

        Args:
            optimizer: The training optimizer (a torch optimizer or the Trainer's wrapped one).
            batch: A training batch with labels (one measured forward/backward; training is undisturbed).

        Returns:
            Predicted bytes of the smallest configuration the controller can train in (``None`` unbounded).
        """
        device = next(self.rl.model.parameters()).device
        self.batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        self.optimizer = optimizer
        self.reader.optimizer = optimizer
        ranks = self.rl.group_ranks
        if self.sync is not None:
            self.sync.check_settings(self.settings())
        if max(ranks) > self.r_max:
            raise ValueError(f"The run starts at group ranks {ranks}, above r_max={self.r_max}; raise r_max.")
        status = self.memory.read(optimizer, self.batch)
        if self.budget_frac is not None:
            # Relative wall, as the environment sets it at reset; a resumed run keeps the wall it started with.
            # The re-read reuses the activations just measured: it only states the status against the wall.
            self.memory.budget = self._saved_reference or max(int(self.budget_frac * status.used), 1)
            if self.sync is not None:  # every process walls where the deciding one does
                self.memory.budget = self.sync.from_main(self.memory.budget)
            status = self.memory.read(optimizer)
        minimum = prepare_controller(self.controller, group_ranks=ranks, r_max=self.r_max, rank_step=self.rank_step,
                                     split_by_kind=self.rl.split_by_kind, budget=self.budget,
                                     total_steps=self.total_steps)
        if self.budget is not None and status.used > self.budget.budget:
            self.start_fit = _fit_start(self.budget, ranks, self.rank_step)
        if self.sync is not None:
            self.start_fit = self.sync.from_main(self.start_fit)
        if self.start_fit is not None:
            self.rl.set_group_ranks(self.start_fit, optimizer=optimizer)
            if self.sync is not None:
                self.sync.after_change(self.rl, optimizer)
            status = self.memory.read(optimizer, self.batch)
        if self.budget is None:
            # No wall: memory features are fractions of the memory at the start ranks, the convention the
            # environment trains policies with (budget_frac 1.0), instead of fractions of "infinity".
            self.reader.budget.budget = self._saved_reference or max(int(status.used), 1)
            if self.sync is not None:
                self.reader.budget.budget = self.sync.from_main(self.reader.budget.budget)
        self._peak(status.used)
        if self.last_used is None:  # a resumed run keeps the memory it had
            self.last_used = status.used
        self.ready = True
        return minimum

    # ------------------------------------------------------------------ per step
    def after_backward(self) -> None:
        """Accumulate importance; call between ``backward`` and ``optimizer.step`` (once per optimizer step)."""
        self.reader.after_backward()

    def record_loss(self, loss: float | torch.Tensor, step: int | None = None) -> None:
        """Record a training loss (also logged to TensorBoard as ``train/loss``)."""
        value = float(loss.detach()) if torch.is_tensor(loss) else float(loss)
        self.reader.update_loss(value)
        self._scalar("train/loss", value, self.step_count if step is None else step)

    def record_eval(self, accuracy: float, step: int | None = None) -> None:
        """Record an evaluation accuracy (seen by the next decision; logged as ``eval/accuracy``)."""
        self.reader.update_eval(float(accuracy))
        self._scalar("eval/accuracy", float(accuracy), self.step_count if step is None else step)

    def step(self, step: int, loss: float | torch.Tensor | None = None, optimizer=None,
             eval_accuracy: float | None = None) -> Applied | None:
        """Note optimizer step ``step`` (1-based, counted after the update); decide when it is a multiple of ``every``.

        Args:
            step: Optimizer steps taken so far.
            loss: The step's training loss, if known.
            optimizer: The optimizer to repair on a resize (default: the one given to :meth:`setup`).
            eval_accuracy: An evaluation accuracy measured at this step, if any.

        Returns:
            The applied decision, or ``None`` when this step does not decide.
        """
        if not self.ready:
            raise RuntimeError("RankControl.setup(optimizer, batch) must run before training: it makes every check "
                               "(policy, budget) and measures memory.")
        if step > self.step_count and self.last_used is not None:
            self._memory_sum += self.last_used * (step - self.step_count)
            self._memory_steps += step - self.step_count
        self.step_count = int(step)
        if loss is not None:
            self.record_loss(loss, step)
        if eval_accuracy is not None:
            self.record_eval(eval_accuracy, step)
        if step <= 0 or step % self.every or step == self.last_decision_step:
            return None
        return self.decide(step, optimizer)

    def decide(self, step: int, optimizer=None) -> Applied:
        """Read the signals, decide through the wall, resize, re-measure and log (normally via :meth:`step`)."""
        optimizer = optimizer if optimizer is not None else self.optimizer
        self.reader.optimizer = optimizer
        signals = self.reader.read()
        if self.sync is not None:  # averaged over the processes; rank 0 decides for all
            signals = self.sync.reduce_signals(signals)
        ctx = ControllerContext.build(signals, step=step, total_steps=self.total_steps, r_max=self.r_max,
                                      rank_step=self.rank_step, last_change=self.last_change, budget=self.budget)
        if self.sync is None:
            applied = self.controller.apply(ctx)
        else:
            applied = self.sync.decide(lambda: self.controller.apply(ctx))
        used_after = ctx.signals.memory.used
        if applied.changed:
            self.rl.set_group_ranks(applied.ranks, optimizer=optimizer)
            if self.sync is not None:
                self.sync.after_change(self.rl, optimizer)
            used_after = self.memory.read(optimizer, self.batch).used
        self._peak(max(ctx.signals.memory.used, used_after))
        self.last_used = used_after
        self.last_change = applied.last_change
        self.last_applied = applied
        self.last_decision_step = step
        self.decisions += 1
        record = decision_record(ctx, applied, controller=self.spec, memory_after=used_after)
        loss = self.reader.loss
        record.update(decision=self.decisions, train_loss=loss.ema, train_loss_last=loss.last,
                      trainable_params=self.trainable_params(), memory_scope=self.memory.scope,
                      r_max=self.r_max, rank_step=self.rank_step)
        self._write(record, applied, used_after)
        return applied

    def settings(self) -> dict:
        """What every data-parallel process must agree on: controller, schedule, rank grid, budget, scope."""
        absolute = self.budget is not None and self.budget_frac is None
        return {"controller": self.spec, "every": self.every, "total_steps": self.total_steps,
                "r_max": self.r_max, "rank_step": self.rank_step, "budget_frac": self.budget_frac,
                "memory_scope": self.memory.scope, "budget_bytes": self.budget.budget if absolute else None,
                "group_ranks": self.rl.group_ranks, "num_groups": self.rl.num_groups}

    # ------------------------------------------------------------------ figures
    def trainable_params(self) -> int:
        """Number of trainable parameters now (LoRA factors and the saved head)."""
        return sum(p.numel() for p in self.rl.trainable_parameters())

    @property
    def mean_used(self) -> float | None:
        """Memory averaged over the optimizer steps seen so far (bytes; ``None`` before the first step)."""
        return self._memory_sum / self._memory_steps if self._memory_steps else None

    def _peak(self, used: int) -> None:
        self.peak_used = used if self.peak_used is None else max(self.peak_used, used)

    # ------------------------------------------------------------------ logs
    @property
    def decisions_path(self) -> Path | None:
        """``log_dir/decisions.jsonl`` (``None`` without a log directory)."""
        return self.log_dir / DECISIONS_FILE if self.log_dir is not None else None

    def _writer_or_none(self):
        if self.log_dir is None:
            return None
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir / TB_DIR))
        return self._writer

    def _scalar(self, tag: str, value: float, step: int) -> None:
        """Queue a TensorBoard scalar; the queue is written at each decision (and on flush, finish, close)."""
        if self.log_dir is not None and math.isfinite(value):
            self._pending_scalars.append((tag, value, step))
            if len(self._pending_scalars) >= MAX_PENDING_SCALARS:
                self.flush()

    def flush(self) -> None:
        """Write the queued TensorBoard scalars and flush the TensorBoard file."""
        self._write_scalars()
        if self._writer is not None:
            self._writer.flush()

    def _write_scalars(self) -> None:
        if not self._pending_scalars:
            return
        writer = self._writer_or_none()
        pending, self._pending_scalars = self._pending_scalars, []
        for tag, value, step in pending:
            writer.add_scalar(tag, value, step)

    def _write(self, record: dict, applied: Applied, used_after: int) -> None:
        step = record["step"]
        for g, rank in enumerate(applied.ranks):
            self._scalar(f"rank/group{g}", rank, step)
        self._scalar("memory/used_mib", used_after / MIB, step)
        if self.budget is not None:
            self._scalar("memory/budget_mib", self.budget.budget / MIB, step)
            self._scalar("memory/used_frac", used_after / self.budget.budget, step)
        self._scalar("decision/wall_hit", float(bool(applied.clipped)), step)
        self._scalar("decision/changed", float(applied.changed), step)
        self._scalar("trainable_params", float(record["trainable_params"]), step)
        if self.log_dir is None:
            return
        self._write_scalars()
        if self._log is None:
            self._log = DecisionLog(self.decisions_path)
        self._log.write(record)

    def truncate_log(self, after_step: int) -> int:
        """Drop ``decisions.jsonl`` lines of steps after ``after_step`` (a resumed run redoes them); return kept."""
        path = self.decisions_path
        if path is None or not path.exists():
            return 0
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= after_step]
        path.write_text("".join(line + "\n" for line in kept))
        return len(kept)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """JSON-serialisable state: controller state, ranks, step counters, last change, initial loss."""
        return {
            "format": STATE_FORMAT,
            "controller": self.controller.name,
            "spec": self.spec,
            "controller_state": self.controller.state_dict(),
            "group_ranks": self.rl.group_ranks,
            "module_ranks": self.rl.ranks,
            "step": self.step_count,
            "decisions": self.decisions,
            "last_decision_step": self.last_decision_step,
            "last_change": self.last_change,
            "peak_used": self.peak_used,
            "last_used": self.last_used,
            "memory_sum": self._memory_sum,
            "memory_steps": self._memory_steps,
            "memory_reference": self.memory.budget if self.budget is None or self.budget_frac is not None else None,
            "initial_loss": self.reader.loss.initial,
            "every": self.every,
            "r_max": self.r_max,
            "rank_step": self.rank_step,
            "budget_bytes": self.budget.budget if self.budget is not None else None,
        }

    def load_state_dict(self, state: dict, optimizer=None) -> None:
        """Restore :meth:`state_dict`: resize to the saved module ranks (repairing ``optimizer``) and continue.

        Raises:
            ValueError: the state belongs to another controller, rank grid or model.
        """
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"Unknown rankrl control state format {state.get('format')!r} (expected {STATE_FORMAT}).")
        if state["controller"] != self.controller.name:
            raise ValueError(f"The saved control state is of controller '{state['controller']}', not "
                             f"'{self.controller.name}'; resume with the same --controller.")
        for key in ("r_max", "rank_step"):
            if state[key] != getattr(self, key):
                raise ValueError(f"The saved control state has {key}={state[key]} but this run has "
                                 f"{key}={getattr(self, key)}; resume with the same settings.")
        unknown = set(state["module_ranks"]) ^ set(self.rl.ranks)
        if unknown:
            raise ValueError(f"The saved control state is of another model: modules {sorted(unknown)[:3]} differ.")
        self.rl.resize(state["module_ranks"], optimizer=optimizer)
        self.controller.load_state_dict(state["controller_state"])
        self.step_count = int(state["step"])
        self.decisions = int(state["decisions"])
        self.last_decision_step = state["last_decision_step"]
        self.last_change = state["last_change"]
        self.peak_used = state["peak_used"]
        self.last_used = state.get("last_used")
        self._memory_sum = state.get("memory_sum", 0)
        self._memory_steps = state.get("memory_steps", 0)
        self._saved_reference = state.get("memory_reference")
        if state.get("initial_loss") is not None and self.reader.loss.initial is None:
            self.reader.loss.initial = float(state["initial_loss"])

    # ------------------------------------------------------------------ end
    def finish(self, out_dir: str | Path) -> Path:
        """Save the adapter as plain PEFT (``rank_pattern`` / ``exclude_modules``) and flush the logs."""
        self.flush()
        return self.rl.save_pretrained(out_dir)

    def close(self) -> None:
        """Write the queued scalars, close TensorBoard and remove the signal hooks."""
        self._write_scalars()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.reader.close()


def _fit_start(budget: MemoryBudget, ranks: list[int], rank_step: int) -> list[int]:
    """Shrink the lowest live group by ``rank_step`` until the ranks fit the budget (checked to be possible)."""
    ranks = list(ranks)
    while not budget.would_fit(ranks):
        live = [g for g, rank in enumerate(ranks) if rank > 0]
        if not live:
            raise BudgetTooSmallError(f"Even every group at rank 0 exceeds the memory budget of "
                                      f"{budget.budget / MIB:.2f} MiB; raise the budget.")
        ranks[live[0]] = max(0, ranks[live[0]] - rank_step)
    return ranks
