"""``RankControl``: deploy a rank controller in any training loop (plain PyTorch, or the HF ``Trainer``).

One object owns the :class:`~rankrl.signals.SignalReader`, the controller and the logs. Every ``every``
optimizer steps (and once before the first step, so that a run can start under a budget below its
starting ranks) it reads the signals, builds the :class:`~rankrl.controllers.ControllerContext` exactly as
the environment builds its observation, lets the controller decide through the memory wall, resizes the
model and repairs the optimizer (``RankedLoRA.set_group_ranks``, ``freeze``, ``thaw``), re-measures memory
and writes one line of ``decisions.jsonl`` plus TensorBoard scalars. When the budget moves (a trace, or the
free memory of the GPU) and drops below the memory in use, it decides at once, so the memory in force at
every optimizer step is at or under the wall; a step where it is not counts as a wall violation. Its
set-up and decisions leave torch's random state as they found it, so the training of two controllers that
set the same ranks is the same run (:func:`off_the_training_stream`). A hand-written loop::

    rl = RankedLoRA.attach(model, rank=8, num_groups=4)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-3)
    control = RankControl(rl, make_controller("importance"), every=50, budget_mb=900, total_steps=1000,
                          log_dir="runs/mine")
    control.setup(optimizer, reference_batch)   # every check (policy, budget) and the first decision
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

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from rankrl.budget import BudgetTrace, LiveBudget, MemoryBudget
from rankrl.controllers import (
    DECISIONS_FILE,
    Applied,
    ControllerContext,
    DecisionLog,
    RankController,
    decision_record,
    prepare_controller,
)
from rankrl.controllers.base import MIB
from rankrl.lora import RankedLoRA
from rankrl.lora.allocation import apply_allocation
from rankrl.runs import atomic_write_text
from rankrl.signals import SignalReader

UNBOUNDED = 2**62
"""Budget of the internal memory meter when the run has none, until :meth:`RankControl.setup` sets it to the
memory at the start ranks: the reference of the memory features (there is still no wall)."""
MAX_PENDING_SCALARS = 512
"""TensorBoard scalars queued between decisions before they are written anyway (see ``RankControl._scalar``)."""
STATE_FORMAT = 1
TB_DIR = "tb"
_Method = TypeVar("_Method", bound=Callable[..., Any])


def off_the_training_stream(method: _Method) -> _Method:
    """Run a :class:`RankControl` method on a copy of torch's random state, restored when it returns.

    Set-up and decisions run forward passes of their own (memory reads, a rule's what-if passes, signal
    probes) whose dropout draws from torch's global generator, and each controller runs different ones.
    Without this, two arms that set the same ranks would train on different dropout masks, and a comparison
    paired by seed would measure the controllers' bookkeeping as well as their allocations. With it, the
    training's random stream depends only on the seed and the allocations, as if no controller had looked.
    """

    @functools.wraps(method)
    def wrapper(self: RankControl, *args: Any, **kwargs: Any) -> Any:
        device = next(self.rl.model.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # as the meter's what-ifs
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class RankControl:
    """A rank controller deployed in a training loop: decide every ``every`` optimizer steps, resize, log.

    Args:
        rl: The model being trained.
        controller: The controller (:func:`rankrl.controllers.make_controller`).
        every: Optimizer steps between decisions (decisions at steps ``every``, ``2*every``, ...).
        budget_mb: Memory budget in MiB (the hard wall), or ``None`` for an unbounded run.
        budget_frac: A wall at this fraction of the reference memory: the run at its starting ranks, every
            group training, measured by :meth:`setup` on its batch in ``memory_scope`` (the environment's
            convention). ``rankrl.deploy.finetune.with_policy_defaults`` reads the fraction a learned policy
            was trained with.
        budget_trace: A budget that moves over the optimizer steps (:class:`~rankrl.budget.BudgetTrace`,
            fractions of the reference or MiB).
        live_budget: A budget that follows the GPU's free memory, read at each decision.
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
                 budget_frac: float | None = None, budget_trace: BudgetTrace | None = None,
                 live_budget: LiveBudget | None = None, total_steps: int | None = None,
                 log_dir: str | Path | None = None,
                 memory_scope: str = "total", r_max: int | None = None, rank_step: int | None = None,
                 spec: str | None = None,
                 **reader_options) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive number of optimizer steps, got {every!r}.")
        if budget_mb is not None and not (math.isfinite(budget_mb) and budget_mb > 0):
            raise ValueError(f"The memory budget must be a positive number of MiB, got {budget_mb!r}.")
        if budget_frac is not None and not (math.isfinite(budget_frac) and budget_frac > 0):
            raise ValueError(f"budget_frac must be a positive fraction of the reference memory, got {budget_frac!r}.")
        given = [name for name, value in (("budget_mb", budget_mb), ("budget_frac", budget_frac),
                                          ("budget_trace", budget_trace), ("live_budget", live_budget))
                 if value is not None]
        if len(given) > 1:
            raise ValueError(f"Give one budget, not {' and '.join(given)}.")
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
        self.budget_mb = budget_mb
        self.budget_frac = budget_frac
        self.budget_trace = budget_trace
        self.live_budget = live_budget
        self.budget: MemoryBudget | None = self.reader.budget if given else None
        self.reference: int | None = None
        self.violations = 0
        self.max_over_wall = 0
        self._last_budget: int | None = None
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
        self._saved_reference: int | None = None  # the reference memory of a resumed run
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

    @off_the_training_stream
    def setup(self, optimizer: torch.optim.Optimizer, batch: dict, *, start: bool = True) -> int | None:
        """Measure the reference memory, run every check, and make the first decision before the first step.

        The reference is the memory of the run at its starting ranks with every group training, measured on
        ``batch`` (use one fixed batch padded to the run's ``max_length``, so that every arm and seed of a
        comparison is measured alike). Budgets given as fractions are fractions of it.

        A policy for another observation layout or number of groups, a missing or corrupt policy file, a
        controller that needs a budget or a schedule it lacks, and a budget (the lowest of a trace) below
        the smallest configuration the controller can train in all raise here, before the first step. Then
        the controller decides at step 0, through the wall: a run can start below its starting ranks.

        Args:
            optimizer: The training optimizer (a torch optimizer or the Trainer's wrapped one).
            batch: A batch with labels (one measured forward/backward; training is undisturbed).
            start: Make the first decision now; with ``False`` call :meth:`start` (e.g. once the log
                directory exists).

        Returns:
            Predicted bytes of the smallest configuration the controller can train in (``None`` unbounded).
        """
        device = next(self.rl.model.parameters()).device
        moved = any(torch.is_tensor(v) and v.device != device for v in batch.values())
        # The same object when nothing moves: measured memory figures are cached per batch object.
        self.batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()} if moved else batch
        self.optimizer = optimizer
        self.reader.optimizer = optimizer
        ranks = self.rl.group_ranks
        if self.sync is not None:
            self.sync.check_settings(self.settings())
        if max(ranks) > self.r_max:
            raise ValueError(f"The run starts at group ranks {ranks}, above r_max={self.r_max}; raise r_max.")
        status = self.memory.read(optimizer, self.batch)
        self.reference = self._saved_reference or max(int(status.used), 1)
        if self.sync is not None:  # every process measures against the deciding one's reference
            self.reference = self.sync.from_main(self.reference)
        self.memory.reference = self.reference
        resumed = self.step_count > 0
        if self.budget is None:
            # No wall: memory features are fractions of the reference, the convention the environment trains
            # policies with (budget_frac 1.0), instead of fractions of "infinity".
            self.memory.budget = self.reference
        else:
            self.memory.budget = self.minimum_budget() if self.live_budget is None else self.budget_at(0)
        minimum = prepare_controller(self.controller, group_ranks=ranks, r_max=self.r_max, rank_step=self.rank_step,
                                     split_by_kind=self.rl.split_by_kind, budget=self.budget,
                                     total_steps=self.total_steps)
        if self.budget is not None:
            self.memory.floor = self.minimum_budget()
            self.memory.budget = self.budget_at(self.step_count)
        self.memory.read(optimizer)
        self.ready = True
        if resumed and self.last_used is None:
            self.last_used = self.memory.read(optimizer, self.batch).used
        if start and not resumed:
            self.start()
        return minimum

    def start(self) -> Applied:
        """The first decision, before the first optimizer step (after :meth:`setup`)."""
        if not self.ready:
            raise RuntimeError("RankControl.setup(optimizer, batch) must run first.")
        applied = self.decide(0, self.optimizer)
        if applied.forced:
            self.start_fit = list(applied.ranks)
        return applied

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

    def step(self, step: int, loss: float | torch.Tensor | None = None, optimizer: torch.optim.Optimizer | None = None,
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
            self._peak(self.last_used)
            if self.budget is not None and self.last_used > self.budget.budget:
                self.violations += step - self.step_count
                self.max_over_wall = max(self.max_over_wall, self.last_used - self.budget.budget)
        self.step_count = int(step)
        if loss is not None:
            self.record_loss(loss, step)
        if eval_accuracy is not None:
            self.record_eval(eval_accuracy, step)
        if step == self.last_decision_step:
            return None
        if self.budget_trace is not None:  # a trace can drop between decisions: meet it before the next step
            self.budget.budget = self.budget_at(step)
            if self.last_used is not None and self.last_used > self.budget.budget:
                return self.decide(step, optimizer)
        if step <= 0 or step % self.every:
            return None
        return self.decide(step, optimizer)

    def budget_at(self, step: int) -> int:
        """The budget in force from optimizer step ``step`` on (bytes; needs :meth:`setup`)."""
        if self.budget_mb is not None:
            return int(self.budget_mb * MIB)
        if self.budget_frac is not None:
            return max(int(self.budget_frac * self.reference), 1)
        if self.budget_trace is not None:
            return max(self.budget_trace.bytes_at(step, self.reference), 1)
        if self.live_budget is not None:
            frozen_base = self.memory.last.report.frozen_parameters if self.memory.scope == "adapter" else 0
            return max(self.live_budget.bytes_now() - frozen_base, 1)
        return self.reference

    def minimum_budget(self) -> int:
        """The lowest budget the run is known to meet (a trace's minimum; the current one otherwise)."""
        if self.budget_trace is not None:
            return max(self.budget_trace.minimum_bytes(self.reference), 1)
        return self.budget_at(self.step_count)

    @off_the_training_stream
    def decide(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> Applied:
        """Read the signals, decide through the wall, resize, re-measure and log (normally via :meth:`step`)."""
        optimizer = optimizer if optimizer is not None else self.optimizer
        self.reader.optimizer = optimizer
        trend = 0.0
        if self.budget is not None:
            if self.live_budget is not None:
                self.budget.budget = self.budget_at(step)
            previous = self._last_budget if self._last_budget is not None else self.budget.budget
            trend = (self.budget.budget - previous) / self.reference if self.reference else 0.0
            self._last_budget = self.budget.budget
        signals = self.reader.read()
        if self.sync is not None:  # averaged over the processes; rank 0 decides for all
            signals = self.sync.reduce_signals(signals)
        ctx = ControllerContext.build(signals, step=step, total_steps=self.total_steps, r_max=self.r_max,
                                      rank_step=self.rank_step, last_change=self.last_change, budget=self.budget,
                                      budget_trend=trend)
        if self.sync is None:
            applied = self.controller.apply(ctx)
        else:
            applied = self.sync.decide(lambda: self.controller.apply(ctx))
        used_after = ctx.signals.memory.used
        if applied.changed:
            apply_allocation(self.rl, applied.ranks, applied.frozen, optimizer)
            if self.sync is not None:
                self.sync.after_change(self.rl, optimizer)
            used_after = self.memory.read(optimizer, self.batch).used
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
        trace = self.budget_trace
        return {"controller": self.spec, "every": self.every, "total_steps": self.total_steps,
                "r_max": self.r_max, "rank_step": self.rank_step, "budget_mb": self.budget_mb,
                "budget_frac": self.budget_frac, "budget_trace": None if trace is None else repr(trace),
                "memory_scope": self.memory.scope, "group_ranks": self.rl.group_ranks,
                "frozen_groups": self.rl.frozen_groups, "num_groups": self.rl.num_groups}

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
        for g, frozen in enumerate(applied.frozen):
            self._scalar(f"frozen/group{g}", float(frozen), step)
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
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if isinstance(record, dict) and record.get("step", after_step + 1) <= after_step:
                kept.append(line)
        atomic_write_text(path, "".join(line + "\n" for line in kept))
        return len(kept)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """JSON-serialisable state: controller state, ranks, frozen modules, step counters, last change and
        initial loss."""
        return {
            "format": STATE_FORMAT,
            "controller": self.controller.name,
            "spec": self.spec,
            "controller_state": self.controller.state_dict(),
            "group_ranks": self.rl.group_ranks,
            "module_ranks": self.rl.ranks,
            "frozen": sorted(self.rl.frozen),
            "step": self.step_count,
            "decisions": self.decisions,
            "last_decision_step": self.last_decision_step,
            "last_change": self.last_change,
            "peak_used": self.peak_used,
            "last_used": self.last_used,
            "memory_sum": self._memory_sum,
            "memory_steps": self._memory_steps,
            "memory_reference": self.reference,
            "budget_in_force": self.budget.budget if self.budget is not None else None,
            "violations": self.violations,
            "max_over_wall": self.max_over_wall,
            "last_budget": self._last_budget,
            "initial_loss": self.reader.loss.initial,
            "every": self.every,
            "r_max": self.r_max,
            "rank_step": self.rank_step,
            "budget_bytes": self.budget.budget if self.budget is not None else None,
        }

    def load_state_dict(self, state: dict, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Restore :meth:`state_dict`: resize to the saved module ranks, freeze the saved frozen modules (repairing
        ``optimizer``) and continue.

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
        frozen = state.get("frozen", [])
        if any(state["module_ranks"].get(name, 0) == 0 for name in frozen):
            raise ValueError("The saved control state freezes modules it has at rank 0 (or unknown); it is corrupt.")
        self.rl.resize(state["module_ranks"], optimizer=optimizer)
        self.rl.thaw(sorted(self.rl.frozen - set(frozen)), optimizer=optimizer)
        self.rl.freeze(frozen, optimizer=optimizer)
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
        self.violations = int(state.get("violations", 0))
        self.max_over_wall = int(state.get("max_over_wall", 0))
        self._last_budget = state.get("last_budget")
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
