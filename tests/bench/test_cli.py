"""``rankrl bench`` on the command line: a tiny benchmark, its resume, and one clear error for bad input."""

from __future__ import annotations

import csv

import pytest
from typer.testing import CliRunner

from rankrl.cli import app
from tests.bench.conftest import TASK

runner = CliRunner(env={"COLUMNS": "200"})
TINY = ["--model", "tiny", "--tasks", TASK, "--steps", "6", "--every", "3", "--eval-size", "48", "--batch-size", "8",
        "--max-length", "32", "--rank", "4", "--num-groups", "2", "--lr", "3e-3", "--no-progress"]


def bench(*args: str):
    return runner.invoke(app, ["bench", *TINY, *args])


def test_bench_command_writes_the_outputs_and_resumes(tmp_path):
    out = tmp_path / "out"
    result = bench("--controllers", "fixed:2,importance", "--seeds", "1", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "2 runs" in result.output and "report:" in result.output
    with (out / "results.csv").open(newline="") as handle:
        assert [row["arm"] for row in csv.DictReader(handle)] == ["fixed:2", "importance"]
    assert (out / "report.md").exists() and (out / "pareto.png").exists()

    again = bench("--controllers", "fixed:2,importance", "--seeds", "1", "--out", str(out))
    assert again.exit_code == 2 and "already exists" in again.output and "--resume" in again.output
    resumed = bench("--controllers", "fixed:2,importance", "--seeds", "1", "--out", str(out), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming: 2 finished" in resumed.output
    other = bench("--controllers", "fixed:2,importance", "--seeds", "2", "--out", str(out), "--resume")
    assert other.exit_code == 2 and "other settings (seeds: was 1, now 2)" in other.output


@pytest.mark.parametrize(("args", "message"), [
    (["--controllers", "fixed,ada-lora"], "Known controllers: fixed, layerwise, importance, complexity, variance, "
                                          "greedy-memory, static-fit, autofreeze, learned, adalora, oracle-static. "
                                          "Did you mean 'adalora'?"),
    (["--tasks", "synthetic:nosuch"], "unknown synthetic task 'nosuch'"),
    (["--tasks", "zebra=/nowhere/train.tsv:/nowhere/dev.tsv"], "task 'zebra'"),
    (["--seeds", "0"], "--seeds must be a positive integer"),
    (["--budget-mb", "20,lots"], "--budget-mb: 'lots' is not a number"),
    (["--controllers", "greedy-memory"], "needs a memory budget; pass --budget-frac, --budget-mb"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = bench(*args, "--out", str(out))
    assert result.exit_code == 2
    assert result.output.count("error:") == 1 and message in result.output
    assert not out.exists()
