"""Fault injection: SIGKILL real ``rankrl train`` / ``finetune`` / ``bench`` processes at seeded random points,
resume them, and check what survived.

For every kill point: no file under its final name is half-written (temporary names are renamed into place),
at most one checkpoint interval of work is lost, the resumed run completes, and where the process is
deterministic (``finetune``, ``bench``) the final outputs equal an uninterrupted run's.

``RANKRL_FAULT_POINTS`` sets the kill points per command (default 1, three in all, to keep the suite short on
shared CPUs); ``RANKRL_FAULT_SEED`` picks other points. docs/reliability.md records a longer run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import zipfile
from pathlib import Path

import pytest
from rich.console import Console
from safetensors.torch import load_file

from rankrl.bench import run_bench
from rankrl.bench.results import ResultsFile
from rankrl.deploy.finetune import FinetuneConfig, resume_finetune, run_finetune
from rankrl.deploy.resume import list_checkpoints
from tests.bench.conftest import tiny_config
from tests.deploy.test_resume import assert_same_run, outputs
from tests.processes import TINY_AGENT, TINY_FINETUNE, kill, rankrl, wait_for

POINTS = int(os.environ.get("RANKRL_FAULT_POINTS", "1"))
SEED = int(os.environ.get("RANKRL_FAULT_SEED", "0"))
QUIET = Console(quiet=True)
STEPS, EVERY = 72, 4  # finetune: optimizer steps and the checkpoint interval
# Kill marks lie in the first half of a finetune run, so that the steps left take far longer than the largest
# extra delay even on an idle machine: a kill must land before the run ends.


def kill_point(command: str, index: int) -> tuple[int, float]:
    """``(progress mark, extra delay in seconds)``: the process is killed ``delay`` after it passes the mark."""
    rng = random.Random(f"{SEED}/{command}/{index}")
    mark = {"finetune": rng.randrange(2 * EVERY, STEPS // 2, EVERY), "train": rng.randrange(10, 30, 10),
            "bench": rng.randrange(0, 3)}[command]
    return mark, rng.uniform(0.0, 0.4)


def assert_nothing_half_written(root: Path) -> None:
    """Every file under its final name reads back whole; only rankrl's temporary names may be incomplete."""
    for path in Path(root).rglob("*"):
        if not path.is_file() or ".tmp-" in str(path) or path.name.endswith(".partial.zip") or "tfevents" in path.name:
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
        elif path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                assert archive.testzip() is None and "policy.pth" in archive.namelist(), path
        elif path.suffix == ".safetensors":
            load_file(str(path))


def finetune_config(out) -> FinetuneConfig:
    return FinetuneConfig(model="tiny", data="synthetic:keyword?n_train=256&n_eval=64", controller="importance",
                          steps=STEPS, every=EVERY, eval_size=48, lr=3e-3, batch_size=8, max_length=32, rank=4,
                          num_groups=2, out=str(out))


@pytest.fixture(scope="module")
def finetune_reference(tmp_path_factory):
    return outputs(run_finetune(finetune_config(tmp_path_factory.mktemp("ref") / "run"), console=QUIET,
                                progress=False))


def done_steps(out: Path) -> int:
    """Optimizer steps the run has certainly finished (its newest checkpoint or logged decision)."""
    steps = [int(p.name.split("_")[1]) for p in list_checkpoints(out)]
    path = out / "decisions.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError, KeyError):
                steps.append(json.loads(line)["step"])
    return max(steps, default=0)


@pytest.mark.parametrize("index", range(POINTS))
def test_finetune_killed_at_a_random_point_resumes_to_the_same_end(finetune_reference, tmp_path, index):
    mark, delay = kill_point("finetune", index)
    out = tmp_path / "run"
    process = rankrl("finetune", *TINY_FINETUNE, "--controller", "importance", "--steps", STEPS, "--every", EVERY,
                     "--out", out)
    assert wait_for(lambda: done_steps(out) >= mark, process), process.communicate()
    wait_for(lambda: False, process, timeout=delay)
    known = done_steps(out)
    kill(process)
    assert_nothing_half_written(out)
    assert not (out / "metrics.json").exists()
    messages = []
    console = Console(quiet=True)
    console.print = lambda text, *a, **k: messages.append(str(text))
    resume_finetune(out, console=console, progress=False)
    resumed_at = int(re.search(r"at step (\d+)", " ".join(messages)).group(1))
    assert known - resumed_at <= EVERY, (known, resumed_at)  # at most one checkpoint interval lost
    assert_same_run(outputs(out), finetune_reference)
    assert_nothing_half_written(out)


@pytest.mark.parametrize("index", range(POINTS))
def test_train_killed_at_a_random_point_resumes_to_its_target(tmp_path, index):
    from rankrl.train import train_policy
    from rankrl.train.trainer import _checkpoints

    mark, delay = kill_point("train", index)
    agent = tmp_path / "quick.yaml"
    agent.write_text(TINY_AGENT)
    run_dir = tmp_path / "runs" / "tiny" / "quick_0_1"
    process = rankrl("train", "--env", "tiny", "--agent", agent, "--timesteps", 30, "--out", tmp_path / "runs",
                     "--no-progress")
    assert wait_for(lambda: run_dir.exists() and any(t >= mark for t, _ in _checkpoints(run_dir)), process), \
        process.communicate()
    wait_for(lambda: False, process, timeout=delay)
    known = max(t for t, _ in _checkpoints(run_dir))
    kill(process)
    assert_nothing_half_written(run_dir)
    train_policy(resume=run_dir, progress=False)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resumed"][0]["from_timesteps"] >= known  # nothing before the newest checkpoint is lost
    assert config["timesteps"] == 30
    assert json.loads((run_dir / "policy.json").read_text())["metadata"]["timesteps"] == 30
    assert_nothing_half_written(run_dir)


BENCH = dict(controllers=["fixed:2"], seeds=3, steps=24, every=4)


@pytest.fixture(scope="module")
def bench_reference(tmp_path_factory):
    return run_bench(tiny_config(tmp_path_factory.mktemp("ref") / "bench", **BENCH), console=QUIET,
                     progress=False).rows


def same_rows(a: list[dict], b: list[dict]) -> None:
    keys = ("run_id", "status", "accuracy", "macro_f1", "eval_loss", "final_ranks", "steps", "peak_memory_mib",
            "trainable_params", "decisions")
    by_id = {row["run_id"]: row for row in b}
    assert sorted(row["run_id"] for row in a) == sorted(by_id)
    for row in a:
        for key in keys:
            expected = by_id[row["run_id"]][key]
            if isinstance(expected, float):
                expected = pytest.approx(expected, rel=1e-6)
            assert row[key] == expected, (row["run_id"], key)


@pytest.mark.parametrize("index", range(POINTS))
def test_bench_killed_at_a_random_point_resumes_to_the_same_results(bench_reference, tmp_path, index):
    run, delay = kill_point("bench", index)
    out = tmp_path / "bench"
    config = tiny_config(out, **BENCH)
    args = ["bench", "--model", "tiny", "--tasks", config.tasks[0], "--controllers", "fixed:2", "--seeds", "3",
            "--steps", "24", "--every", "4", "--eval-size", "48", "--batch-size", "8", "--max-length", "32",
            "--rank", "4", "--num-groups", "2", "--lr", "3e-3", "--fixed-ranks", "2,4", "--out", out, "--no-progress"]
    process = rankrl(*args)
    run_dir = out / "runs" / "keyword" / "fixed-2" / f"seed{run}"
    assert wait_for(lambda: bool(list_checkpoints(run_dir)), process), process.communicate()
    wait_for(lambda: False, process, timeout=delay)
    kill(process)
    assert_nothing_half_written(out / "runs")
    ResultsFile(out).repair()
    config.resume = True
    result = run_bench(config, console=QUIET, progress=False)
    same_rows(result.rows, bench_reference)
    assert len(ResultsFile(out).read()) == 3
