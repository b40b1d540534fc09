"""``results.csv``: one row per run, appended (and flushed) as each run finishes, so an interruption loses
at most the run in progress.

A row is built from the run's ``metrics.json`` (written by ``rankrl finetune`` or the AdaLoRA runner), so a
run that finished but whose row was not yet written is recovered on resume from its directory.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from rankrl.bench.plan import PlannedRun

RESULTS_FILE = "results.csv"
OK, ERROR = "ok", "error"
COLUMNS = [
    "run_id", "task", "arm", "kind", "controller", "start_rank", "lr", "budget", "budget_mb", "budget_frac",
    "budget_trace", "seed", "status",
    "accuracy", "macro_f1", "initial_accuracy", "eval_loss",
    "peak_memory_mib", "mean_memory_mib", "memory_scope", "reference_mib", "wall_violations",
    "max_over_wall_mib", "frozen_groups", "peak_memory_total_mib", "peak_memory_adapter_mib",
    "cuda_peak_mib",
    "controller_state_mib", "trainable_params", "peak_trainable_params", "effective_params", "final_ranks",
    "steps", "diverged", "decisions", "wall_seconds", "train_seconds", "controller_seconds",
    "controller_overhead", "run_dir", "error",
]
"""Columns of ``results.csv``. Memory is in MiB: ``peak_memory_mib`` in the bench's ``--memory-scope`` (the
one budgets and comparisons use), plus both scopes, and the CUDA allocator's peak (empty on a CPU).
``mean_memory_mib`` is the memory in force at each optimizer step averaged over the run (the peak is its
maximum).
``controller_state_mib`` is state a controller keeps beside training memory (importance EMAs; AdaLoRA's
allocator). ``effective_params`` is what AdaLoRA's masks leave (the trainable count for the others).
``controller_overhead`` is the share of training time spent in the controller machinery.
``wall_violations`` counts optimizer steps taken with more memory in force than the wall allowed; a run with
any is a failed run (``status`` error), never a result."""
NUMERIC = {"start_rank", "lr", "budget_mb", "budget_frac", "reference_mib", "wall_violations",
           "max_over_wall_mib", "seed", "accuracy", "macro_f1", "initial_accuracy", "eval_loss",
           "peak_memory_mib", "mean_memory_mib", "peak_memory_total_mib", "peak_memory_adapter_mib",
           "cuda_peak_mib",
           "controller_state_mib", "trainable_params", "peak_trainable_params", "effective_params", "steps",
           "decisions", "wall_seconds", "train_seconds", "controller_seconds", "controller_overhead"}


def base_row(run: PlannedRun, run_dir: Path) -> dict:
    """The columns that identify a run."""
    arm = run.arm
    return {"run_id": run.run_id, "task": run.task.name, "arm": arm.label, "kind": arm.kind, "controller": arm.spec,
            "start_rank": arm.rank, "lr": arm.lr, "budget": arm.budget, "budget_mb": arm.budget_mb,
            "budget_frac": arm.budget_frac, "budget_trace": arm.budget_trace, "seed": run.seed,
            "run_dir": str(run_dir)}


def row_from_metrics(run: PlannedRun, run_dir: Path, metrics: dict, wall_seconds: float | None) -> dict:
    """A finished run's row from its ``metrics.json``."""
    row = base_row(run, run_dir)
    row.update(
        status=OK, accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"],
        initial_accuracy=metrics.get("initial_accuracy"), eval_loss=metrics.get("eval_loss"),
        peak_memory_mib=metrics["peak_memory_mib"], mean_memory_mib=metrics.get("mean_memory_mib"),
        memory_scope=metrics.get("memory_scope"),
        peak_memory_total_mib=metrics.get("peak_memory_total_mib"),
        peak_memory_adapter_mib=metrics.get("peak_memory_adapter_mib"),
        cuda_peak_mib=metrics.get("cuda_max_allocated_mib"), controller_state_mib=metrics.get("controller_state_mib"),
        trainable_params=metrics["trainable_params"], peak_trainable_params=metrics.get("peak_trainable_params"),
        effective_params=metrics.get("effective_params", metrics["trainable_params"]),
        final_ranks=json.dumps(metrics.get("group_ranks")), steps=metrics.get("steps"),
        diverged=metrics.get("diverged"), decisions=metrics.get("decisions"),
        wall_seconds=wall_seconds if wall_seconds is not None else metrics.get("train_seconds"),
        train_seconds=metrics.get("train_seconds"), controller_seconds=metrics.get("controller_seconds"),
        controller_overhead=metrics.get("controller_overhead"), reference_mib=metrics.get("reference_mib"),
        wall_violations=metrics.get("wall_violations", 0), max_over_wall_mib=metrics.get("max_over_wall_mib", 0.0),
        frozen_groups=json.dumps(metrics.get("frozen_groups")),
    )
    if metrics.get("wall_violations"):
        row.update(status=ERROR, error=f"wall violated: {metrics['wall_violations']} optimizer steps over the "
                                       f"budget (by up to {metrics.get('max_over_wall_mib', 0):.3f} MiB)")
    return row


def error_row(run: PlannedRun, run_dir: Path, err: BaseException, wall_seconds: float) -> dict:
    """The row of a run that failed (it is retried on resume)."""
    row = base_row(run, run_dir)
    row.update(status=ERROR, error=f"{type(err).__name__}: {err}".replace("\n", " "), wall_seconds=wall_seconds)
    return row


class ResultsFile:
    """``DIR/results.csv``: append rows, read them back typed."""

    def __init__(self, root: str | Path) -> None:
        self.path = Path(root) / RESULTS_FILE

    def read(self) -> list[dict]:
        """Every row, numbers as floats (``None`` where empty), ``diverged`` as a bool."""
        if not self.path.exists():
            return []
        with self.path.open(newline="") as handle:
            return [_typed(row) for row in csv.DictReader(handle)]

    def append(self, row: dict) -> None:
        """Append one row (the header first when the file is new) and flush it to disk."""
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({key: _cell(row.get(key)) for key in COLUMNS})
            handle.flush()
            os.fsync(handle.fileno())

    def drop_errors(self) -> int:
        """Remove failed rows (their runs are retried); return how many were removed."""
        rows = self.read()
        kept = [row for row in rows if row["status"] != ERROR]
        if len(kept) == len(rows):
            return 0
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in kept:
                writer.writerow({key: _cell(row.get(key)) for key in COLUMNS})
        tmp.replace(self.path)
        return len(rows) - len(kept)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def _typed(row: dict) -> dict:
    out: dict = {}
    for key, value in row.items():
        if key in NUMERIC:
            out[key] = float(value) if value not in ("", None) else None
        elif key == "diverged":
            out[key] = value == "True"
        else:
            out[key] = value if value != "" else None
    return out
