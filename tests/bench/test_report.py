"""``report.md`` (a table per task, winners, notes) and ``pareto.png`` from hand-made rows."""

from __future__ import annotations

from rankrl.bench.config import TaskSpec
from rankrl.bench.plot import plot_pareto
from rankrl.bench.report import render_report
from rankrl.bench.results import COLUMNS, ResultsFile
from tests.bench.conftest import tiny_config
from tests.bench.helpers import front_rows, row

TASKS = [TaskSpec("t", "synthetic:keyword"), TaskSpec("u", "u/train.tsv", "u/dev.tsv")]


def rows() -> list[dict]:
    extra = [row("u", "fixed:2", "fixed", 0, 0.9, 12.0, rank=2), row("u", "adalora", "adalora", 0, 0.91, 13.0),
             row("u", "importance", "adaptive", 1, 0.0, 0.0, status="error", error="ValueError: boom")]
    return front_rows() + extra


def test_report_has_a_table_per_task_winners_and_notes(tmp_path):
    settings = tiny_config(tmp_path, budget_mb=[13.5]).settings()
    text = render_report(settings, TASKS, rows(), planned=25)
    assert text.count("| arm | kind | seeds |") == 2 and "## t" in text and "## u" in text
    assert "Data: `u/train.tsv (eval: u/dev.tsv)`" in text
    assert "| good | adaptive | 3 |" in text and "fixed:4: +0.032" in text and "**better**" in text
    assert "**within noise**" in text  # the noisy arm
    assert "| good | fixed:4 | +0.030, +0.032, +0.034 | +0.032 ± 0.002 | [+0.030, +0.034] | yes | better |" in text
    assert "| noisy | fixed:4 | +0.030, -0.050, +0.030 |" in text and "| no | within noise |" in text
    assert "no fixed rank at ≤ this memory" in text  # the tiny arm
    assert "| 13.5 MiB | good |" in text and "good ahead beyond noise" in text
    assert "one seed: no interval" in text  # task u has one seed
    assert "unmasked" in text and "**AdaLoRA** (PEFT) only masks" in text
    assert "**Failed:** `u/importance/seed1`: ValueError: boom" in text
    assert "20 of 25 runs finished (the rest: resume with `--resume`)" in text


def test_report_shows_mean_memory_and_the_learned_wall(tmp_path):
    learned = [row("t", "learned:p", "adaptive", seed, 0.80, 15.0, controller="learned:/p/policy.zip",
                   mean_memory_mib=13.25) for seed in range(3)]
    text = render_report(tiny_config(tmp_path).settings(), TASKS[:1], front_rows() + learned, planned=21)
    assert "| mean MiB (total) |" in text
    assert "| learned:p | adaptive | 3 | 0.800 ± 0.000 | 0.750 ± 0.000 | 15.00 ± 0.00 | 13.25 |" in text
    assert "**Learned policies** without `--budget-mb` run behind the wall they were trained with" in text
    path = plot_pareto(tmp_path / "pareto.png", TASKS[:1], front_rows() + learned, [], "total")
    assert path.stat().st_size > 10_000


def test_pareto_plot_is_written(tmp_path):
    path = plot_pareto(tmp_path / "pareto.png", TASKS, rows(), [13.5], "total")
    assert path.stat().st_size > 10_000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_file_round_trip_and_error_rows(tmp_path):
    results = ResultsFile(tmp_path)
    for r in rows():
        results.append(r)
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert header.split(",") == COLUMNS
    back = results.read()
    assert len(back) == len(rows()) and back[0]["accuracy"] == 0.70 and back[0]["cuda_peak_mib"] is None
    assert back[0]["diverged"] is False and back[-1]["status"] == "error"
    assert results.drop_errors() == 1 and len(results.read()) == len(rows()) - 1
