"""``run_bench``: every arm on every task and seed, with results that survive an interruption.

The benchmark directory ``DIR`` holds ``config.json`` (the resolved settings), ``results.csv`` (one row per
run, appended as each finishes), ``report.md``, ``pareto.png`` and ``runs/<task>/<arm>/seed<k>/`` (each a
full ``rankrl finetune`` run directory: ``decisions.jsonl``, ``metrics.json``, ``tb/``, ``adapter/``).

An existing ``DIR`` is refused unless ``resume`` is set; a resume must use the settings ``DIR`` was started
with, drops half-written rows of ``results.csv`` (a kill while appending), skips every run with a whole row (or
``metrics.json``), retries failed ones, continues an interrupted run from its last checkpoint, and moves the
directory of a run interrupted before its first checkpoint aside (``seed<k>.partial-<n>``) before running it
again. Diverged runs keep their row (status ``diverged``) and never count as results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from rankrl import interrupt
from rankrl.bench.config import BenchConfig, TaskSpec, parse_tasks
from rankrl.bench.plan import Arm, PlannedRun, expand_arms, plan_runs
from rankrl.bench.plot import PARETO_FILE, plot_pareto
from rankrl.bench.preflight import preflight
from rankrl.bench.ray_runner import move_aside, run_on_ray
from rankrl.bench.report import REPORT_FILE, write_report
from rankrl.bench.results import ERROR, ResultsFile, row_from_metrics
from rankrl.bench.runner import execute
from rankrl.bench.stats import ArmSummary, Paired, compare_to_fixed, summarize
from rankrl.cluster import connect_ray
from rankrl.deploy.finetune import METRICS_FILE
from rankrl.deploy.resume import list_checkpoints
from rankrl.runs import CONFIG_FILE, RunDirectoryExistsError, check_writable, claim_run_dir, write_config

BENCH_BACKENDS = ("local", "ray")


@dataclass
class BenchResult:
    """What a benchmark produced.

    Attributes:
        out: The benchmark directory.
        rows: Every row of ``results.csv``.
        summaries: Per task and arm: means and standard deviations over seeds.
        comparisons: Per (task, non-fixed arm): the paired difference to the best fixed rank at equal or
            lower memory (``None`` when no fixed rank is that cheap).
        planned: Runs of the benchmark.
        ran: Runs made by this call.
        skipped: Runs already finished (resume).
    """

    out: Path
    rows: list[dict]
    summaries: list[ArmSummary]
    comparisons: dict[tuple[str, str], Paired | None]
    planned: int
    ran: int = 0
    skipped: int = 0
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        """Rows of failed runs."""
        return [row for row in self.rows if row["status"] == ERROR]


def prepare(config: BenchConfig) -> tuple[list[TaskSpec], list[Arm], list[PlannedRun]]:
    """Check the settings and expand them into tasks, arms and runs (nothing is read from disk but policies)."""
    config.check()
    tasks = parse_tasks(config.tasks)
    arms = expand_arms(config)
    return tasks, arms, plan_runs(tasks, arms, config.seeds)


def run_bench(config: BenchConfig, console: Console | None = None, progress: bool = True,
              backend: str = "local", address: str | None = None) -> BenchResult:
    """Run (or resume) a benchmark and write ``results.csv``, ``report.md`` and ``pareto.png`` (module docstring).

    ``backend="ray"`` makes every run a Ray task (:mod:`rankrl.bench.ray_runner`) on a local Ray or the
    cluster at ``address``; the rows are the same as a local benchmark's for the same seeds (one torch thread
    per run), only their order in ``results.csv`` follows completion. The backend is not a setting of the
    benchmark: a resume may use another one.

    Raises:
        ValueError: bad settings, task, controller, model or budget; a resume with other settings; a bad
            backend, no ``ray`` extra or an unreachable ``address``. Raised before anything is written.
        RunDirectoryExistsError: ``config.out`` exists and ``config.resume`` is not set.
        KeyboardInterrupt: on Ctrl-C, after the report of the finished runs is written.
    """
    console = console or Console()
    if backend not in BENCH_BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BENCH_BACKENDS)}, got {backend!r}.")
    if address is not None and backend != "ray":
        raise ValueError("--address goes with --backend ray.")
    tasks, arms, runs = prepare(config)
    out = Path(config.out)
    resuming = _check_out(out, config)
    check_writable(out, "--out")
    unfit = preflight(config, tasks, arms)
    runs = [run for run in runs if (run.task.name, run.arm.label) not in unfit]
    connection = connect_ray(address, 1, what="--backend ray") if backend == "ray" else None
    if not resuming:
        claim_run_dir(out)
        write_config(out, {"command": "bench", "settings": config.settings(), "tasks": [t.to_dict() for t in tasks],
                           "arms": [a.to_dict() for a in arms], "runs": len(runs),
                           "unfit_oracle_arms": sorted(f"{t}/{a}" for t, a in unfit)})
    results = ResultsFile(out)
    broken = results.repair()
    retried = results.drop_errors()
    pending, skipped, resumable = _pending(runs, results, out, console)
    if broken:
        console.print(f"  {broken} half-written row(s) of {results.path} dropped; their runs are checked again")
    console.print(f"[bold]rankrl bench[/] {config.model}: {len(tasks)} task(s) x {len(arms)} arm(s) x "
                  f"{config.seeds} seed(s) = {len(runs)} runs -> {out}"
                  + (f"\n  resuming: {skipped} finished" + (f", {retried} failed retried" if retried else "")
                     if resuming else ""))
    ran = 0
    try:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
        with Progress(*columns, console=console, disable=not progress) as bar:
            task = bar.add_task("bench", total=len(runs), completed=skipped, status="")

            def record(row: dict) -> None:
                nonlocal ran
                results.append(row)
                ran += 1
                bar.console.print(_line(row))
                bar.advance(task)

            if connection is not None:
                bar.update(task, status=f"{len(pending)} Ray tasks on {connection.cpus:g} CPUs")
                run_on_ray(pending, config, out, record)
            else:
                for run in pending:
                    interrupt.stop_point(lambda: "")
                    bar.update(task, status=run.run_id)
                    record(execute(run, config, out, resume=run.run_id in resumable))
    except (KeyboardInterrupt, interrupt.Interrupted) as err:
        finished = skipped + ran
        _write_outputs(out, config, tasks, results.read(), len(runs))
        signum = err.signum if isinstance(err, interrupt.Interrupted) else None
        raise interrupt.Interrupted(
            f"bench interrupted: {finished} of {len(runs)} runs are finished and saved in {out / 'results.csv'}; "
            "the run in progress kept its last checkpoint and --resume continues it.", signum) from None
    finally:
        if connection is not None:
            connection.close()
    rows = results.read()
    files = _write_outputs(out, config, tasks, rows, len(runs))
    summaries = summarize(rows)
    console.print(f"  {len(rows)} runs in {files['results']}; report: {files['report']}; plot: {files['pareto']}")
    return BenchResult(out=out, rows=rows, summaries=summaries, comparisons=compare_to_fixed(rows, summaries),
                       planned=len(runs), ran=ran, skipped=skipped, files=files)


def _check_out(out: Path, config: BenchConfig) -> bool:
    """Whether ``out`` is resumed; refuse an existing ``out`` without resume, or with other settings."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return False
    if not config.resume:
        raise RunDirectoryExistsError(f"Benchmark directory {out} already exists and is not empty; rankrl never "
                                      "overwrites a run. Pass --resume to continue it, or choose another --out.")
    path = out / CONFIG_FILE
    if not out.is_dir() or not path.exists():
        raise ValueError(f"--resume: {out} is not a rankrl bench directory (no {CONFIG_FILE}).")
    saved = json.loads(path.read_text())
    if saved.get("command") != "bench":
        raise ValueError(f"--resume: {out} is a rankrl {saved.get('command', '?')} run, not a benchmark.")
    now = json.loads(json.dumps(config.settings()))
    # A setting added after the benchmark was started counts as its default there.
    before = {**json.loads(json.dumps(BenchConfig().settings())), **saved.get("settings", {})}
    changed = [key for key in sorted(set(now) | set(before)) if now.get(key) != before.get(key)]
    if changed:
        detail = "; ".join(f"{key}: was {before.get(key)!r}, now {now.get(key)!r}" for key in changed)
        raise ValueError(f"--resume: {out} was started with other settings ({detail}). Resume with the same "
                         "settings, or start a new benchmark with another --out.")
    return True


def _pending(runs: list[PlannedRun], results: ResultsFile, out: Path,
             console: Console) -> tuple[list[PlannedRun], int, set[str]]:
    """Runs still to make; recover rows of runs that finished without one; runs with a checkpoint are continued
    from it (their ids are returned), other half-made runs are moved aside."""
    done = {row["run_id"] for row in results.read()}
    pending, skipped, resumable = [], 0, set()
    for run in runs:
        run_dir = run.directory(out)
        metrics = _metrics(run_dir)
        if run.run_id in done:
            skipped += 1
        elif metrics is not None:
            results.append(row_from_metrics(run, run_dir, metrics, None))
            skipped += 1
        elif list_checkpoints(run_dir) and (run_dir / CONFIG_FILE).exists():
            console.print(f"  {run.run_id} was interrupted; it continues from its last checkpoint")
            resumable.add(run.run_id)
            pending.append(run)
        else:
            aside = move_aside(run_dir)
            if aside is not None:
                console.print(f"  {run.run_id} was interrupted half-way; its directory is kept as {aside}")
            pending.append(run)
    return pending, skipped, resumable


def _metrics(run_dir: Path) -> dict | None:
    """A run's ``metrics.json`` when it is whole (a damaged one means the run is made again)."""
    try:
        metrics = json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    needed = ("accuracy", "macro_f1", "peak_memory_mib", "trainable_params")
    return metrics if isinstance(metrics, dict) and all(k in metrics for k in needed) else None


def _write_outputs(out: Path, config: BenchConfig, tasks: list[TaskSpec], rows: list[dict],
                   planned: int) -> dict[str, Path]:
    files = {"results": out / "results.csv", "report": out / REPORT_FILE, "pareto": out / PARETO_FILE}
    write_report(files["report"], config.settings(), tasks, rows, planned)
    if any(row["status"] != ERROR for row in rows):
        plot_pareto(files["pareto"], tasks, rows, config.budget_mb, config.memory_scope)
    return files


def _line(row: dict) -> str:
    if row["status"] == ERROR:
        return f"[red]failed[/] {row['run_id']}: {row['error']}"
    return (f"[green]ok[/] {row['run_id']}: accuracy {row['accuracy']:.3f} (macro-F1 {row['macro_f1']:.3f}), peak "
            f"{row['peak_memory_mib']:.2f} MiB, {row['trainable_params']:,} trainable, {row['wall_seconds']:.1f} s")
