"""``rankrl finetune``: a full LoRA fine-tuning run with a rank controller, from data files to a PEFT adapter.

Every check runs before the first training step and before the run directory is created, so bad input
(an unknown controller, a missing, corrupt or untrusted policy, a policy for another observation layout or
number of groups, a budget below the smallest trainable configuration, bad data) fails with one clear error
and leaves nothing behind. An existing non-empty ``--out`` is refused, as everywhere in rankrl.

The run directory holds ``config.json``, ``decisions.jsonl`` (one line per decision), ``metrics.json``
(final accuracy and macro-F1, peak measured memory, trainable parameters), ``tb/`` (TensorBoard) and
``adapter/`` (a plain PEFT adapter with ``rank_pattern``). ``rankrl explain RUN_DIR`` draws it.

While it trains, ``checkpoints/step_<n>/`` holds the two newest periodic checkpoints (every
``--checkpoint-every`` steps, default ``--every``), from which ``rankrl finetune --resume DIR`` continues to
the same end (:mod:`rankrl.deploy.resume`). A run whose loss turns non-finite writes ``metrics.json`` with
``diverged: true``, saves no adapter and raises :class:`DivergedRunError`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields, replace
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
from rankrl.runs import (
    RunDirectoryExistsError,
    atomic_write_text,
    check_writable,
    claim_run_dir,
    read_config,
    write_config,
)
from rankrl.session import FineTuneSession, SessionConfig
from rankrl.settings import RunSettings, setting

METRICS_FILE = "metrics.json"
ADAPTER_DIR = "adapter"


@dataclass
class FinetuneConfig(RunSettings):
    """The flags of ``rankrl finetune`` (saved as ``config.json``): the shared :class:`RunSettings` and these."""

    data: str = setting("synthetic:keyword", "Train data: a .tsv/.csv/.jsonl file, a hub id or synthetic:NAME "
                        "(required unless --resume).", panel="Model and task", cli_default=None)
    eval_data: str | None = setting(None, "Eval data (default: held out from --data).", panel="Model and task")
    data_format: str | None = setting(None, "csv, tsv, json or trec for files whose extension does not say (TREC "
                                      "files are recognised by their lines).", panel="Data files")
    controller: str = setting("fixed", "learned:PATH | fixed[:R] | layerwise:R,R,.. | importance | complexity | "
                              "variance | greedy-memory | static-fit | autofreeze (options as NAME:key=value).",
                              panel="Controller")
    policy: str | None = setting(None, "Policy for --controller learned (run dir or policy.json).",
                                 panel="Controller")
    budget_mb: float | None = setting(None, "Memory budget in MiB (the hard wall); none by default.",
                                      panel="Memory budget")
    budget_frac: float | None = setting(None, "A wall at this fraction of the reference memory: the run at --rank "
                                        "with every group training (default: a learned policy's training wall, "
                                        "else none).", panel="Memory budget")
    budget_trace: str | None = setting(None, "A moving wall: a CSV file with a header step,budget_mb or "
                                       "step,budget_frac and one row per change from step 0.", panel="Memory budget")
    budget: str | None = setting(None, "'live': follow the GPU's free memory (NVML) minus --budget-margin-mb, "
                                 "read at each decision (CUDA only).", panel="Memory budget")
    budget_margin_mb: float = setting(512.0, "Memory kept free by --budget live.", panel="Memory budget")
    memory_scope: str | None = setting(None, "'total' (with the frozen base) or 'adapter' (the rank-dependent "
                                       "part): the scope of the wall and of the reported memory, the same for "
                                       "every controller (default total; without it a learned policy keeps its "
                                       "wall and observations in its own training scope).", panel="Memory budget")
    seed: int = setting(0, "Seed of adapters, head and data order.", panel="Training")
    out: str = setting("runs/finetune", "Run directory (must not exist or be empty; required unless --resume).",
                       panel="Run", cli_default=None)
    checkpoint_every: int | None = setting(None, "Steps between checkpoints that --resume continues from "
                                           "(optimizer steps; default --every; 0: none).", panel="Run")

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
            raise ValueError(f"--budget-frac must be a positive fraction of the reference memory, got "
                             f"{self.budget_frac}.")
        if self.budget not in (None, "live"):
            raise ValueError(f"--budget takes 'live' (follow the GPU's free memory), got {self.budget!r}.")
        given = [flag for flag, value in (("--budget-mb", self.budget_mb), ("--budget-frac", self.budget_frac),
                                          ("--budget-trace", self.budget_trace), ("--budget live", self.budget))
                 if value is not None]
        if len(given) > 1:
            raise ValueError(f"Give one budget: {' or '.join(given)}, not several.")
        if self.budget_trace is not None:
            BudgetTrace.from_csv(self.budget_trace)  # a bad file fails here, before any run directory exists
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a positive finite number, got {self.lr}.")
        if self.eval_every is not None and self.eval_every < 0:
            raise ValueError(f"--eval-every must be >= 0 (0: only at the start and the end), got {self.eval_every}.")
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise ValueError(f"--checkpoint-every must be >= 0 (0: no periodic checkpoints), got "
                             f"{self.checkpoint_every}.")
        if self.encoding is not None:
            import codecs

            try:
                codecs.lookup(self.encoding)
            except LookupError:
                raise ValueError(f"--encoding {self.encoding!r} is not a known text encoding (e.g. utf-8, "
                                 "latin-1, cp1252).") from None
        if self.memory_scope not in (None, "total", "adapter"):
            raise ValueError(f"--memory-scope must be 'total' or 'adapter', got {self.memory_scope!r}.")


def build_controller(spec: str, policy: str | None = None, trust_policy: bool = False) -> tuple[RankController, str]:
    """The controller of ``--controller`` (and ``--policy``) and its full spec; unknown names list the known ones."""
    if policy is not None:
        name = spec.partition(":")[0].strip().lower()
        if name != "learned" or ":" in spec:
            raise ValueError(f"--policy goes with --controller learned (got --controller {spec}).")
        spec = f"learned:{policy}"
    name = spec.partition(":")[0].strip().lower()
    controller = make_controller(spec, trust_policy=trust_policy) if name == "learned" else make_controller(spec)
    if isinstance(controller, LearnedController):
        spec = f"learned:{controller.path.resolve()}"
    return controller, spec


def rank_grid(controller: RankController, rank: int, r_max: int | None, rank_step: int | None) -> tuple[int, int]:
    """``(r_max, rank_step)``: the flags, else a learned policy's own grid, else ``2 * rank`` and ``r_max // 8``."""
    if isinstance(controller, LearnedController):
        metadata = controller.metadata
        r_max = r_max if r_max is not None else metadata.get("r_max")
        rank_step = rank_step if rank_step is not None else metadata.get("rank_step")
    r_max = int(r_max) if r_max is not None else 2 * rank
    rank_step = int(rank_step) if rank_step is not None else max(1, r_max // 8)
    if rank > r_max:
        raise ValueError(f"--rank {rank} is above --r-max {r_max}.")
    return r_max, rank_step


def _policy_metadata(controller: RankController) -> dict:
    """A learned policy's ``metadata.json`` (empty for heuristics and bare zips)."""
    return dict(controller.metadata) if isinstance(controller, LearnedController) else {}


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
    rank-8 update 2.8 times larger: in effect a larger learning rate than the ``--lr`` the user chose, which
    can ruin a run tuned for ``alpha/r``. The policy decides ranks, not the step size, so the flags decide it.
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
                       budget_trace=trace, live_budget=live, total_steps=config.steps,
                       memory_scope=config.memory_scope or "total", r_max=r_max, rank_step=rank_step, spec=spec)


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


class DivergedRunError(RuntimeError):
    """A run whose loss became non-finite: its ``metrics.json`` says so, no adapter was saved, and it never
    counts as a result (``rankrl finetune`` exits non-zero; ``bench`` marks the row ``diverged``)."""

    def __init__(self, message: str, run_dir: Path, metrics: dict) -> None:
        super().__init__(message)
        self.run_dir = run_dir
        self.metrics = metrics


def run_finetune(config: FinetuneConfig, console: Console | None = None, progress: bool = True) -> Path:
    """Fine-tune with a rank controller and return the run directory (see the module docstring).

    Raises:
        ValueError: bad settings, data, controller, policy or budget (before training; nothing is written).
        RunDirectoryExistsError: ``--out`` exists and is not empty.
        NotWritableError: ``--out`` cannot be created or written (checked before any work).
        DivergedRunError: the loss became non-finite (``metrics.json`` written, no adapter).
        Interrupted: Ctrl-C / SIGTERM; the last checkpoint is on disk (``rankrl finetune --resume DIR``).
    """
    console = console or Console()
    config.check()
    check_out_free(config.out)
    check_writable(config.out, "--out")
    controller, spec = build_controller(config.controller, config.policy, config.trust_policy)
    scope = reported_scope(config)
    config = with_policy_defaults(controller, config)
    task = _load_task(config)
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
        # The first decision sees the accuracy before training, as in the environment, where a policy is
        # trained with it: evaluated first, then decided.
        first = session.evaluate()
        control.record_eval(first.accuracy, 0)
        control.start()
        if main:
            write_config(run_dir, {"command": "finetune", **asdict(config), "controller_spec": spec,
                                   "r_max": control.r_max, "rank_step": control.rank_step,
                                   "num_groups_effective": session.rl.num_groups, "task": task.summary(),
                                   "session": session_config.to_dict(), "start_ranks": start_ranks,
                                   "start_fit": control.start_fit, "reference_bytes": control.reference,
                                   "reported_memory_scope": scope,
                                   "processes": 1 if sync is None else sync.world_size})
        shift = _scope_shift(session, config.memory_scope, scope)
        relative = (f" ({control.budget_frac:g} x the reference {_mib(_shifted(control.reference, shift))})"
                    if control.budget_frac is not None else
                    f" (trace {config.budget_trace})" if config.budget_trace is not None else "")
        budget = _shifted(control.budget.budget if control.budget else None, shift)
        console.print(f"[bold]rankrl finetune[/] {config.model} on {task.summary()}\n  controller {spec}, "
                      f"every {config.every} steps, "
                      + (f"budget ({scope} scope) {_mib(budget)}{relative}" if budget is not None else "no budget")
                      + f" -> {run_dir}")
        metrics = _train(session, control, config, console, progress and main, run_dir if main else None,
                         scope=scope, initial_accuracy=first.accuracy)
        metrics["processes"] = 1 if sync is None else sync.world_size
        if not main:  # rank 0 writes the run directory
            return run_dir
        return _finish(session, control, metrics, run_dir, console)
    finally:
        control.close()
        if sync is not None:
            torch.distributed.destroy_process_group()


def resume_finetune(run_dir: str | Path, console: Console | None = None, progress: bool = True,
                    trust_policy: bool = False) -> Path:
    """Continue an interrupted ``rankrl finetune`` run from its newest good checkpoint, to the same end.

    The run's own ``config.json`` defines it; the checkpoint holds the adapter factors at their current
    ranks, the optimizer, the schedule, the controller and signal-tracker state and the step, and data order
    is a function of ``(seed, step)``: the resumed run ends where an uninterrupted one would.

    Raises:
        ValueError: not a finetune run directory, a finished run, no usable checkpoint.
    """
    from rankrl.deploy.resume import load_latest_checkpoint, restore_checkpoint

    console = console or Console()
    run_dir = Path(run_dir)
    saved = read_config(run_dir)
    if saved.get("command") != "finetune":
        raise ValueError(f"--resume: {run_dir} is a rankrl {saved.get('command', '?')} run, not a finetune run; "
                         f"continue it with `rankrl {saved.get('command', '?')}`.")
    if (run_dir / METRICS_FILE).exists():
        raise ValueError(f"--resume: {run_dir} has finished (it has {METRICS_FILE}); nothing to continue.")
    check_writable(run_dir, "--resume")
    known = {f.name for f in fields(FinetuneConfig)}
    config = FinetuneConfig(**{k: v for k, v in saved.items() if k in known})
    config.trust_policy = trust_policy or config.trust_policy
    controller, spec = build_controller(saved.get("controller_spec") or config.controller, None, config.trust_policy)
    config.check()
    task = _load_task(config)
    session = FineTuneSession(session_config_for(config), task=task)
    control = make_control(session.rl, controller, spec, config)
    control.log_dir = run_dir
    try:
        checkpoint = load_latest_checkpoint(run_dir, say=lambda text: console.print(f"[yellow]{text}[/]"))
        restore_checkpoint(checkpoint, session, control, session.reference_batch())
        console.print(f"[bold]rankrl finetune[/] resuming {run_dir} at step {checkpoint.step} of {config.steps} "
                      f"(from {checkpoint.path.name}), ranks {session.rl.group_ranks}")
        scope = saved.get("reported_memory_scope") or reported_scope(config)
        metrics = _train(session, control, config, console, progress, run_dir, loop=checkpoint.state["loop"],
                         scope=scope)
        return _finish(session, control, metrics, run_dir, console)
    finally:
        control.close()


def _load_task(config: FinetuneConfig):
    return load_task_data(config.data, config.eval_data, data_format=config.data_format, text_column=config.text_column,
                          label_column=config.label_column, seed=config.seed, encoding=config.encoding,
                          drop_invalid=config.drop_invalid)


def _finish(session: FineTuneSession, control: RankControl, metrics: dict, run_dir: Path, console: Console) -> Path:
    if metrics["diverged"]:
        metrics["adapter"] = None
        atomic_write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
        control.flush()
        raise DivergedRunError(f"training diverged at step {metrics['diverged_at_step']} (non-finite loss): no "
                               f"adapter was saved and the run is not a result. Lower --lr (now "
                               f"{metrics['lr']:g}); details in {run_dir / METRICS_FILE}.", run_dir, metrics)
    metrics["adapter"] = _save_adapter(session.rl, control, run_dir / ADAPTER_DIR, console)
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    console.print(f"  accuracy {metrics['accuracy']:.3f} (macro-F1 {metrics['macro_f1']:.3f}), peak memory "
                  f"({metrics['memory_scope']} scope) {metrics['peak_memory_mib']:.2f} MiB, final ranks "
                  f"{metrics['group_ranks']}, "
                  f"{metrics['decisions']} decisions ({metrics['wall_hits']} at the wall)")
    console.print(f"  adapter: {metrics['adapter']}; TensorBoard: tensorboard --logdir {run_dir / 'tb'}; "
                  f"explain: rankrl explain {run_dir}")
    return run_dir


def reported_scope(config: FinetuneConfig) -> str:
    """The memory scope every printed and saved figure of a run is in: ``--memory-scope``, else ``total``, for
    every controller (a learned policy's wall may work in its own training scope; its figures are converted)."""
    return config.memory_scope or "total"


def _frozen_base_bytes(session: FineTuneSession) -> int:
    """The frozen base (+ buffers): what ``total`` counts and ``adapter`` does not (frozen LoRA factors belong
    to the adapter scope, like trainable ones)."""
    return parameter_bytes(session.rl.model)[1] - sum(p.nbytes for p in session.rl.frozen_factors())


def _scope_shift(session: FineTuneSession, wall_scope: str | None, scope: str) -> int:
    """Bytes to add to a figure measured in ``wall_scope`` (the controller's) to state it in ``scope``."""
    frozen = _frozen_base_bytes(session)
    return (frozen if (wall_scope or "total") == "adapter" else 0) - (frozen if scope == "adapter" else 0)


def _shifted(value: int | None, shift: int) -> int | None:
    return None if value is None else value + shift


def _train(session: FineTuneSession, control: RankControl, config: FinetuneConfig, console: Console,
           progress: bool, run_dir: Path | None, loop: dict | None = None, scope: str = "total",
           initial_accuracy: float | None = None) -> dict:
    """Train to ``config.steps``; checkpoints go to ``run_dir`` (``None``: a process that writes nothing).

    A fresh run passes ``initial_accuracy`` (evaluated before the first decision); a resumed one its ``loop``.

    Memory figures are stated in ``scope`` (:func:`reported_scope`); ``wall_memory_scope`` names the one the
    controller, its wall and ``decisions.jsonl`` work in.
    """
    from rankrl import interrupt
    from rankrl.deploy.resume import save_checkpoint

    eval_every = config.every if config.eval_every is None else config.eval_every
    checkpoint_every = config.checkpoint_every if config.checkpoint_every is not None else config.every
    timer = _Timer()
    session.after_backward = [lambda _session: timer.call(control.after_backward)]
    if loop is None:  # a fresh run; a resumed one carries these in its checkpoint
        if initial_accuracy is None:
            raise ValueError("A fresh run needs the accuracy evaluated before its first decision.")
        loop = {"initial_accuracy": initial_accuracy, "train_seconds": 0.0, "controller_seconds": 0.0,
                "peak_params": control.trainable_params(), "peak_state": control.reader.importance.state_bytes()}
    timer.seconds = loop["controller_seconds"]
    started, diverged_at = time.perf_counter() - loop["train_seconds"], None
    peak_params, peak_state = loop["peak_params"], loop["peak_state"]

    def snapshot() -> dict:
        return {"initial_accuracy": loop["initial_accuracy"], "train_seconds": time.perf_counter() - started,
                "controller_seconds": timer.seconds, "peak_params": peak_params, "peak_state": peak_state}

    def interrupted(save: bool = True) -> str:
        """Save at a step boundary (a KeyboardInterrupt may have hit mid-step: keep the last periodic one)."""
        from rankrl.deploy.resume import list_checkpoints

        if run_dir is None:
            return f"finetune interrupted at step {session.step} of {config.steps} (a process that writes nothing)"
        path = save_checkpoint(run_dir, session, control, snapshot()) if save and session.step else None
        control.flush()
        path = path or next(iter(list_checkpoints(run_dir)), None)
        kept = f"kept {path}" if path else "no checkpoint yet (interrupted before the first one)"
        return (f"finetune interrupted at step {session.step} of {config.steps}; {kept}. Continue with: "
                f"rankrl finetune --resume {run_dir}")

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
               TextColumn("{task.fields[status]}")]
    with Progress(*columns, console=console, transient=True, disable=not progress) as bar:
        task = bar.add_task("fine-tuning", total=config.steps, completed=session.step, status="")
        try:
            while session.step < config.steps:
                interrupt.stop_point(interrupted)
                result = session.train(1)
                if result.diverged:
                    diverged_at = session.step + 1
                    console.print(f"[red]training diverged at step {diverged_at} (loss {result.losses[-1]}); "
                                  "stopping: no adapter is saved and the run does not count as a result.[/]")
                    break
                step = session.step
                accuracy = session.evaluate().accuracy if eval_every and step % eval_every == 0 else None
                applied = timer.call(control.step, step, result.losses[-1], session.optimizer, eval_accuracy=accuracy)
                peak_params = max(peak_params, control.trainable_params())
                if applied is not None or step == 1:
                    peak_state = max(peak_state, control.reader.importance.state_bytes())
                    bar.update(task, status=f"loss {result.losses[-1]:.3f} ranks {session.rl.group_ranks}")
                bar.advance(task)
                if run_dir is not None and checkpoint_every and step % checkpoint_every == 0 and step < config.steps:
                    save_checkpoint(run_dir, session, control, snapshot())
        except KeyboardInterrupt:  # library use without rankrl's signal handlers
            raise interrupt.Interrupted(interrupted(save=False)) from None
    train_seconds = time.perf_counter() - started
    final = session.evaluate()
    control.record_eval(final.accuracy, session.step)
    frozen = _frozen_base_bytes(session)
    shift = _scope_shift(session, config.memory_scope, scope)
    peak_total = control.peak_used + (frozen if config.memory_scope == "adapter" else 0)
    mean_used = control.mean_used if control.mean_used is not None else control.last_used
    mean_total = mean_used + (frozen if config.memory_scope == "adapter" else 0)
    cuda_peak = device_figures(next(session.rl.model.parameters()).device)["cuda_max_allocated"]
    path = control.decisions_path
    records = path.read_text().splitlines() if path is not None and path.exists() else []
    records = [json.loads(line) for line in records if line.strip()]
    return {
        "accuracy": final.accuracy, "macro_f1": final.macro_f1, "eval_loss": final.loss,
        "initial_accuracy": loop["initial_accuracy"], "steps": session.step, "diverged": diverged_at is not None,
        "diverged_at_step": diverged_at, "lr": config.lr,
        "decisions": control.decisions, "wall_hits": sum(bool(r["clipped_groups"]) for r in records),
        "rank_changes": sum(r["ranks_after"] != r["ranks_before"] for r in records),
        "group_ranks": session.rl.group_ranks, "peak_memory_bytes": control.peak_used + shift,
        "peak_memory_mib": (control.peak_used + shift) / MIB, "memory_scope": scope,
        "wall_memory_scope": config.memory_scope or "total",
        # The memory in force at each optimizer step, averaged over the run (what the environment's penalty
        # integrates); the peak above is its maximum.
        "mean_memory_mib": (mean_used + shift) / MIB,
        "mean_memory_total_mib": mean_total / MIB, "mean_memory_adapter_mib": (mean_total - frozen) / MIB,
        "budget_mib": (control.budget.budget + shift) / MIB if control.budget is not None else None,
        "reference_mib": (control.reference + shift) / MIB if control.reference else None,
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
