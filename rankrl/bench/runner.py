"""One run of the benchmark: ``run_finetune`` for fixed and adaptive arms, PEFT AdaLoRA for ``adalora``.

Every run gets the same model, data, steps, batch, evaluation subset and seed from :class:`BenchConfig`;
only the arm's controller, learning rate (fixed-rank sweep), starting rank and budget differ.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console

from rankrl.bench.adalora import adalora_options, run_adalora
from rankrl.bench.config import BenchConfig
from rankrl.bench.plan import ADALORA, FIXED, PlannedRun
from rankrl.bench.results import error_row, row_from_metrics
from rankrl.deploy.finetune import METRICS_FILE, FinetuneConfig, run_finetune


def finetune_config(run: PlannedRun, config: BenchConfig, root: str | Path) -> FinetuneConfig:
    """The :class:`FinetuneConfig` of a run (AdaLoRA reads the same one)."""
    arm = run.arm
    adaptive = arm.kind not in (FIXED, ADALORA)
    return config.finetune_config(
        seed=run.seed, out=str(run.directory(root)), controller=arm.spec if arm.kind != ADALORA else "fixed",
        data=run.task.train, eval_data=run.task.eval, lr=arm.lr, rank=arm.rank if arm.kind == FIXED else config.rank,
        budget_mb=arm.budget_mb, budget_frac=arm.budget_frac, budget_trace=arm.budget_trace,
        r_max=config.r_max if adaptive else None, rank_step=config.rank_step if adaptive else None)


def execute(run: PlannedRun, config: BenchConfig, root: str | Path) -> dict:
    """Make one run and return its ``results.csv`` row; a failure becomes an ``error`` row (Ctrl-C propagates)."""
    run_dir = run.directory(root)
    settings = finetune_config(run, config, root)
    started = time.perf_counter()
    try:
        if run.arm.kind == ADALORA:
            args = run.arm.spec.partition(":")[2]
            run_adalora(settings, adalora_options(args, config.rank, config.steps, config.every))
        else:
            run_finetune(settings, console=Console(quiet=True), progress=False)
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
    except Exception as err:  # a failed run must not end the benchmark; it is recorded and retried on resume
        return error_row(run, run_dir, err, time.perf_counter() - started)
    return row_from_metrics(run, run_dir, metrics, time.perf_counter() - started)
