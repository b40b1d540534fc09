"""``rankrl finetune``: a full LoRA fine-tuning run with a rank controller, from data files to a PEFT adapter.

Every check runs before the first training step and before the run directory is created, so bad input
(an unknown controller, a missing or corrupt ``policy.zip``, a policy for another observation layout or
number of groups, a budget below the smallest trainable configuration, bad data) fails with one clear error
and leaves nothing behind. An existing non-empty ``--out`` is refused, as everywhere in rankrl.

The run directory holds ``config.json``, ``decisions.jsonl`` (one line per decision), ``metrics.json``
(final accuracy and macro-F1, peak measured memory, trainable parameters), ``tb/`` (TensorBoard) and
``adapter/`` (a plain PEFT adapter with ``rank_pattern``). ``rankrl explain RUN_DIR`` draws it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rankrl.budget import BudgetTrace, LiveBudget
from rankrl.controllers import LearnedController, RankController, make_controller
from rankrl.controllers.base import MIB
from rankrl.data import load_task_data
from rankrl.deploy.control import RankControl
from rankrl.deploy.distributed import data_parallel_session
from rankrl.lora import RankedLoRA
from rankrl.memory import device_figures, parameter_bytes
from rankrl.policy import METADATA_FILE
from rankrl.runs import RunDirectoryExistsError, claim_run_dir, write_config
from rankrl.session import FineTuneSession, SessionConfig

METRICS_FILE = "metrics.json"
ADAPTER_DIR = "adapter"


@dataclass
class FinetuneConfig:
    """The flags of ``rankrl finetune`` (saved as ``config.json``)."""

    model: str = "default"
    data: str = "synthetic:keyword"
    eval_data: str | None = None
    text_column: str | None = None
    data_format: str | None = None
    label_column: str | None = None
    controller: str = "fixed"
    policy: str | None = None
    budget_mb: float | None = None
    budget_frac: float | None = None
    budget_trace: str | None = None
    budget: str | None = None
    budget_margin_mb: float = 512.0
    memory_scope: str | None = None
    use_rslora: bool = False
    steps: int = 300
    every: int = 25
    eval_every: int | None = None
    eval_size: int = 256
    lr: float = 1e-3
    batch_size: int = 16
    max_length: int = 64
    rank: int = 8
    r_max: int | None = None
    rank_step: int | None = None
    num_groups: int = 4
    num_hidden_layers: int | None = None
    seed: int = 0
    out: str = "runs/finetune"

    def check(self) -> None:
        """Raise ``ValueError`` naming the flag of the first bad setting."""
        positive = {"--steps": self.steps, "--every": self.every, "--batch-size": self.batch_size,
                    "--rank": self.rank, "--num-groups": self.num_groups, "--eval-size": self.eval_size,
                    "--max-length": self.max_length}
        for flag, value in positive.items():
            if value < 1:
                raise ValueError(f"{flag} must be a positive integer, got {value}.")
        if self.budget_mb is not None and not self.budget_mb > 0:
            raise ValueError(f"--budget-mb must be positive, got {self.budget_mb}.")
        if self.budget_frac is not None and not (math.isfinite(self.budget_frac) and self.budget_frac > 0):
            raise ValueError(f"--budget-frac must be a positive fraction of the reference memory, got {self.budget_frac}.")
        if self.budget not in (None, "live"):
            raise ValueError(f"--budget takes 'live' (follow the GPU's free memory), got {self.budget!r}.")
        given = [flag for flag, value in (("--budget-mb", self.budget_mb), ("--budget-frac", self.budget_frac),
                                          ("--budget-trace", self.budget_trace), ("--budget live", self.budget))
                 if value is not None]
        if len(given) > 1:
            raise ValueError(f"Give one budget: {' or '.join(given)}, not several.")
        if self.budget_trace is not None:
            BudgetTrace.from_csv(self.budget_trace)  # a bad file fails here, before any run directory exists
        if not self.lr > 0:
            raise ValueError(f"--lr must be positive, got {self.lr}.")
        if self.eval_every is not None and self.eval_every < 0:
            raise ValueError(f"--eval-every must be >= 0 (0: only at the start and the end), got {self.eval_every}.")
        if self.memory_scope not in (None, "total", "adapter"):
            raise ValueError(f"--memory-scope must be 'total' or 'adapter', got {self.memory_scope!r}.")


def build_controller(spec: str, policy: str | None = None) -> tuple[RankController, str]:
    """The controller of ``--controller`` (and ``--policy``) and its full spec; unknown names list the known ones."""
    if policy is not None:
        name = spec.partition(":")[0].strip().lower()
        if name != "learned" or ":" in spec:
            raise ValueError(f"--policy goes with --controller learned (got --controller {spec}).")
        spec = f"learned:{policy}"
    controller = make_controller(spec)
    if isinstance(controller, LearnedController):
        spec = f"learned:{controller.path.resolve()}"
    return controller, spec


def rank_grid(controller: RankController, rank: int, r_max: int | None, rank_step: int | None) -> tuple[int, int]:
    """``(r_max, rank_step)``: the flags, else a learned policy's own grid, else ``2 * rank`` and ``r_max // 8``."""
    if isinstance(controller, LearnedController):
        path = controller.path.parent / METADATA_FILE
        metadata = json.loads(path.read_text()) if path.exists() else {}
        r_max = r_max if r_max is not None else metadata.get("r_max")
        rank_step = rank_step if rank_step is not None else metadata.get("rank_step")
    r_max = int(r_max) if r_max is not None else 2 * rank
    rank_step = int(rank_step) if rank_step is not None else max(1, r_max // 8)
    if rank > r_max:
        raise ValueError(f"--rank {rank} is above --r-max {r_max}.")
    return r_max, rank_step


def _policy_metadata(controller: RankController) -> dict:
    """A learned policy's ``metadata.json`` (empty for heuristics and bare zips)."""
    if not isinstance(controller, LearnedController):
        return {}
    path = controller.path.parent / METADATA_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def with_policy_defaults(controller: RankController, config: FinetuneConfig) -> FinetuneConfig:
    """``config`` with a learned policy's training conditions filled in where the flags leave them open.

    * ``memory_scope``: the scope the policy was trained in (its memory features are fractions in that
      scope), else ``total``;
    * ``budget_frac``, without ``--budget-mb``: the relative wall the policy was trained behind. The
      environment sets its wall at ``budget_frac`` times the memory measured at reset and clips every
      growth there, so a policy never saw memory above it; deployed without that wall it would act on
      observations (``memory/used_frac`` above 1) it was never trained on. Heuristics get no default wall.

    The LoRA scaling is *not* taken from the policy: ``use_rslora`` stays as the flags set it (default off,
    PEFT's ``alpha/r``). The ``default`` preset trains under rsLoRA, but rsLoRA at the same ``alpha`` makes a
    rank-8 update 2.8 times larger; deployed that way on MiniLM-L6 (lr 1e-3) fixed rank lost 6 points and a
    learned policy fell to chance in the demo, while the same policy under ``alpha/r`` matched fixed rank.
    """
    metadata = _policy_metadata(controller)
    scope = config.memory_scope if config.memory_scope is not None else metadata.get("memory_scope", "total")
    frac = config.budget_frac
    if config.budget_mb is None and frac is None and config.budget_trace is None and config.budget is None:
        frac = metadata.get("budget_frac")
    return replace(config, memory_scope=scope, budget_frac=frac)


def make_control(rl: RankedLoRA, controller: RankController, spec: str, config: FinetuneConfig) -> RankControl:
    """The :class:`RankControl` of a finetune run from a config resolved by :func:`with_policy_defaults`
    (also what the benchmark's pre-flight sets up)."""
    r_max, rank_step = rank_grid(controller, config.rank, config.r_max, config.rank_step)
    trace = BudgetTrace.from_csv(config.budget_trace) if config.budget_trace is not None else None
    live = LiveBudget(margin_mb=config.budget_margin_mb) if config.budget == "live" else None
    return RankControl(rl, controller, every=config.every, budget_mb=config.budget_mb, budget_frac=config.budget_frac,
                       budget_trace=trace, live_budget=live, total_steps=config.steps, memory_scope=config.memory_scope or "total", r_max=r_max,
                       rank_step=rank_step, spec=spec)


def check_out_free(out: str | Path) -> None:
    """Refuse an existing non-empty ``--out`` before any work (``claim_run_dir`` checks again at creation)."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunDirectoryExistsError(f"Run directory {path} already exists and is not empty; rankrl never "
                                      "overwrites a run. Choose another --out or delete it yourself.")


def session_config_for(config: FinetuneConfig) -> SessionConfig:
    """The :class:`SessionConfig` of a finetune run (model, data, batch, lr, schedule horizon, rank, seed)."""
    return SessionConfig(
        model=config.model, num_hidden_layers=config.num_hidden_layers, task=config.data, eval_task=config.eval_data,
        max_length=config.max_length, batch_size=config.batch_size, eval_size=config.eval_size, lr=config.lr,
        total_steps=config.steps, rank=config.rank, num_groups=config.num_groups, use_rslora=config.use_rslora,
        seed=config.seed)


def run_finetune(config: FinetuneConfig, console: Console | None = None, progress: bool = True) -> Path:
    """Fine-tune with a rank controller and return the run directory (see the module docstring).

    Raises:
        ValueError: bad settings, data, controller, policy or budget (before training; nothing is written).
        RunDirectoryExistsError: ``--out`` exists and is not empty.
    """
    console = console or Console()
    config.check()
    controller, spec = build_controller(config.controller, config.policy)
    config = with_policy_defaults(controller, config)
    check_out_free(config.out)
    task = load_task_data(config.data, config.eval_data, data_format=config.data_format, text_column=config.text_column,
                          label_column=config.label_column, seed=config.seed)
    session_config = session_config_for(config)
    session = FineTuneSession(session_config, task=task)
    control = make_control(session.rl, controller, spec, config)
    # Under torchrun: sharded batches, DDP, one decision for all processes; only rank 0 writes.
    sync = data_parallel_session(session, control)
    main = sync is None or sync.is_main
    console = console if main else Console(quiet=True)
    try:
        control.setup(session.optimizer, session.reference_batch(), start=False)
        start_ranks = session.rl.group_ranks
        run_dir = claim_run_dir(config.out) if main else Path(config.out)
        control.log_dir = run_dir if main else None
        control.start()
        if main:
            write_config(run_dir, {"command": "finetune", **asdict(config), "controller_spec": spec,
                                   "r_max": control.r_max, "rank_step": control.rank_step,
                                   "num_groups_effective": session.rl.num_groups, "task": task.summary(),
                                   "session": session_config.to_dict(), "start_ranks": start_ranks,
                                   "start_fit": control.start_fit, "reference_bytes": control.reference,
                                   "processes": 1 if sync is None else sync.world_size})
        relative = (f" ({control.budget_frac:g} x the reference {_mib(control.reference)})"
                    if control.budget_frac is not None else
                    f" (trace {config.budget_trace})" if config.budget_trace is not None else "")
        console.print(f"[bold]rankrl finetune[/] {config.model} on {task.summary()}\n  controller {spec}, "
                      f"every {config.every} steps, budget {_mib(control.budget.budget if control.budget else None)}"
                      f"{relative} -> {run_dir}")
        metrics = _train(session, control, config, console, progress and main)
        metrics["processes"] = 1 if sync is None else sync.world_size
        if main:
            metrics["adapter"] = _save_adapter(session.rl, control, run_dir / ADAPTER_DIR, console)
            (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
        else:
            metrics["adapter"] = None
    finally:
        control.close()
        if sync is not None:
            torch.distributed.destroy_process_group()
    console.print(f"  accuracy {metrics['accuracy']:.3f} (macro-F1 {metrics['macro_f1']:.3f}), peak memory "
                  f"{metrics['peak_memory_mib']:.2f} MiB, final ranks {metrics['group_ranks']}, "
                  f"{metrics['decisions']} decisions ({metrics['wall_hits']} at the wall)")
    console.print(f"  adapter: {metrics['adapter']}; TensorBoard: tensorboard --logdir {run_dir / 'tb'}; "
                  f"explain: rankrl explain {run_dir}")
    return run_dir


def _train(session: FineTuneSession, control: RankControl, config: FinetuneConfig, console: Console,
           progress: bool) -> dict:
    eval_every = config.every if config.eval_every is None else config.eval_every
    timer = _Timer()
    session.after_backward = [lambda _session: timer.call(control.after_backward)]
    first = session.evaluate()
    control.record_eval(first.accuracy, 0)
    started, diverged, peak_params = time.perf_counter(), False, control.trainable_params()
    peak_state = control.reader.importance.state_bytes()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[status]}")]
    with Progress(*columns, console=console, transient=True, disable=not progress) as bar:
        task = bar.add_task("fine-tuning", total=config.steps, status="")
        for _ in range(config.steps):
            result = session.train(1)
            if result.diverged:
                diverged = True
                console.print(f"[red]training diverged at step {session.step + 1} (loss {result.losses[-1]}); "
                              "stopping and saving what was learned.[/]")
                break
            step = session.step
            accuracy = session.evaluate().accuracy if eval_every and step % eval_every == 0 else None
            applied = timer.call(control.step, step, result.losses[-1], session.optimizer, eval_accuracy=accuracy)
            peak_params = max(peak_params, control.trainable_params())
            if applied is not None or step == 1:
                peak_state = max(peak_state, control.reader.importance.state_bytes())
                bar.update(task, status=f"loss {result.losses[-1]:.3f} ranks {session.rl.group_ranks}")
            bar.advance(task)
    train_seconds = time.perf_counter() - started
    final = session.evaluate()
    control.record_eval(final.accuracy, session.step)
    # The frozen base (+ buffers): frozen LoRA factors belong to the adapter scope, like trainable ones.
    frozen = parameter_bytes(session.rl.model)[1] - sum(p.nbytes for p in session.rl.frozen_factors())
    peak_total = control.peak_used + (frozen if config.memory_scope == "adapter" else 0)
    mean_used = control.mean_used if control.mean_used is not None else control.last_used
    mean_total = mean_used + (frozen if config.memory_scope == "adapter" else 0)
    cuda_peak = device_figures(next(session.rl.model.parameters()).device)["cuda_max_allocated"]
    path = control.decisions_path
    records = path.read_text().splitlines() if path is not None and path.exists() else []
    records = [json.loads(line) for line in records if line.strip()]
    return {
        "accuracy": final.accuracy, "macro_f1": final.macro_f1, "eval_loss": final.loss,
        "initial_accuracy": first.accuracy, "steps": session.step, "diverged": diverged,
        "decisions": control.decisions, "wall_hits": sum(bool(r["clipped_groups"]) for r in records),
        "rank_changes": sum(r["ranks_after"] != r["ranks_before"] for r in records),
        "group_ranks": session.rl.group_ranks, "peak_memory_bytes": control.peak_used,
        "peak_memory_mib": control.peak_used / MIB, "memory_scope": config.memory_scope,
        # The memory in force at each optimizer step, averaged over the run (what the environment's penalty
        # integrates); the peak above is its maximum.
        "mean_memory_mib": mean_used / MIB,
        "mean_memory_total_mib": mean_total / MIB, "mean_memory_adapter_mib": (mean_total - frozen) / MIB,
        "budget_mib": control.budget.budget / MIB if control.budget is not None else None,
        "reference_mib": control.reference / MIB if control.reference else None,
        # Optimizer steps taken with more memory in force than the wall allowed (a failed run when > 0).
        "wall_violations": control.violations, "max_over_wall_mib": control.max_over_wall / MIB,
        "frozen_groups": list(getattr(session.rl, "frozen_groups", [])),
        "trainable_params": control.trainable_params(), "peak_trainable_params": peak_params,
        "train_seconds": train_seconds,
        # Both scopes (they differ by the frozen base, which no rank change touches) and the allocator's peak.
        "peak_memory_total_mib": peak_total / MIB, "peak_memory_adapter_mib": (peak_total - frozen) / MIB,
        "cuda_max_allocated_mib": cuda_peak / MIB if cuda_peak is not None else None,
        # Time inside the controller machinery (importance accumulation, signal reads, decisions, resizes)
        # and the state it keeps beside the measured training memory (importance EMAs).
        "controller_seconds": timer.seconds,
        "controller_overhead": timer.seconds / train_seconds if train_seconds > 0 else 0.0,
        "controller_state_mib": max(peak_state, control.reader.importance.state_bytes()) / MIB,
    }


class _Timer:
    """Wall time spent inside the wrapped calls."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def call(self, fn, *args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started


def _save_adapter(rl: RankedLoRA, control: RankControl, directory: Path, console: Console) -> str | None:
    if not any(rl.group_ranks):
        console.print("[yellow]every group ended at rank 0: there is no LoRA adapter to save.[/]")
        return None
    return str(control.finish(directory))


def _mib(value: int | None) -> str:
    return "none" if value is None else f"{value / MIB:.2f} MiB"
