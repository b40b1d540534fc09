"""``rankrl bench --backend ray``: every run a Ray task; the driver alone appends to ``results.csv``.

Runs write their own run directories, so on a cluster ``--out`` must be a path every machine sees (a shared
filesystem); rows travel back to the driver as task results. A run whose worker dies is retried by Ray
(``max_retries``) after its half-written directory is moved aside, as ``--resume`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from rankrl.bench.config import BenchConfig
from rankrl.bench.plan import PlannedRun
from rankrl.bench.results import error_row
from rankrl.bench.runner import execute
from rankrl.cluster import import_ray

TASK_RETRIES = 2
"""Times Ray re-runs a benchmark run whose worker died (a failing run is an ``error`` row, never retried)."""


def move_aside(run_dir: Path) -> Path | None:
    """Rename a half-made run directory to ``<name>.partial-<n>``; ``None`` if there is none."""
    if not run_dir.exists():
        return None
    n = 1
    while run_dir.with_name(f"{run_dir.name}.partial-{n}").exists():
        n += 1
    aside = run_dir.with_name(f"{run_dir.name}.partial-{n}")
    run_dir.rename(aside)
    return aside


def execute_fresh(run: PlannedRun, config: BenchConfig, root: str) -> dict:
    """:func:`~rankrl.bench.runner.execute` in a Ray worker, after moving aside what a dead attempt left."""
    import torch

    torch.set_num_threads(1)  # one CPU per task, as Ray reserves it
    move_aside(run.directory(root))
    return execute(run, config, root)


def run_on_ray(
    pending: Iterable[PlannedRun], config: BenchConfig, out: Path, on_row: Callable[[dict], None]
) -> int:
    """Submit every pending run as a task and hand each row to ``on_row`` as it finishes; return the count.

    On Ctrl-C the runs still queued or running are cancelled (their directories are moved aside by the
    next ``--resume``) and ``KeyboardInterrupt`` propagates to the caller, which writes the report.
    """
    ray = import_ray()
    task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(execute_fresh)
    refs = {task.remote(run, config, str(out)): run for run in pending}
    finished = 0
    from rankrl import interrupt

    try:
        while refs:
            interrupt.stop_point(lambda: "")  # Ctrl-C / SIGTERM: rankrl's handler only records the request
            done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in done:
                run = refs.pop(ref)
                try:
                    row = ray.get(ref)
                except ray.exceptions.RayError as err:  # the worker kept dying: recorded, retried by --resume
                    row = error_row(run, run.directory(out), err, 0.0)
                on_row(row)
                finished += 1
    except (KeyboardInterrupt, interrupt.Interrupted):
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    return finished
