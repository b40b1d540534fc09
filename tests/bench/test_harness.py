"""``run_bench`` end to end on the tiny model: outputs, resume after an interruption, failures, refusals."""

from __future__ import annotations

import csv
import random

import pytest

from rankrl.bench import COLUMNS, run_bench
from rankrl.bench import harness as harness_module
from rankrl.bench import runner as runner_module
from rankrl.interrupt import Interrupted
from rankrl.runs import RunDirectoryExistsError
from tests.bench.conftest import TASK, tiny_config

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "blue", "red", "small", "big", "house", "tree"]


def write_tsv(path, rows: int, seed: int) -> None:
    """Sentences labelled by whether they contain 'zebra'."""
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for i in range(rows):
        words = rng.choices(WORDS, k=rng.randint(4, 8)) + (["zebra"] if i % 2 else [])
        lines.append(f"{' '.join(words)}\t{'yes' if i % 2 else 'no'}")
    path.write_text("\n".join(lines) + "\n")


def read_csv(path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Fixed ranks 2 and 4, importance under a budget and AdaLoRA on a synthetic task and a local TRAIN:EVAL pair."""
    root = tmp_path_factory.mktemp("bench")
    write_tsv(root / "train.tsv", 96, seed=0)
    write_tsv(root / "dev.tsv", 48, seed=1)
    config = tiny_config(root / "out", tasks=[TASK, f"zebra={root / 'train.tsv'}:{root / 'dev.tsv'}"],
                         controllers=["fixed,importance,adalora"], seeds=2, budget_mb=[23.0])
    return config, run_bench(config, progress=False)


def test_results_csv_has_one_row_per_run(bench):
    config, result = bench
    rows = read_csv(result.out / "results.csv")
    assert list(rows[0]) == COLUMNS
    assert len(rows) == result.planned == 2 * 4 * 2 and result.ran == 16 and not result.failed
    assert {r["status"] for r in rows} == {"ok"} and len({r["run_id"] for r in rows}) == 16
    assert {r["arm"] for r in rows} == {"fixed:2", "fixed:4", "importance", "adalora"}
    assert {r["task"] for r in rows} == {"keyword", "zebra"}
    for r in rows:
        assert 0 <= float(r["accuracy"]) <= 1 and float(r["peak_memory_mib"]) > 0 and int(r["trainable_params"]) > 0
        assert float(r["controller_seconds"]) >= 0 and 0 <= float(r["controller_overhead"]) < 1
        assert float(r["peak_memory_total_mib"]) > float(r["peak_memory_adapter_mib"]) > 0
        assert 0 < float(r["mean_memory_mib"]) <= float(r["peak_memory_mib"]) + 1e-9
        if r["kind"] != "adaptive":  # no decision changes their memory: mean and peak are one figure
            assert float(r["mean_memory_mib"]) == pytest.approx(float(r["peak_memory_mib"]))
    importance = [r for r in rows if r["arm"] == "importance"]
    assert all(float(r["budget_mb"]) == 23.0 and float(r["peak_memory_mib"]) <= 23.0 for r in importance)
    assert all(float(r["mean_memory_mib"]) < float(r["peak_memory_mib"]) for r in importance)  # its schedule shrinks
    assert all(r["budget_mb"] == "" for r in rows if r["kind"] == "fixed")


def test_every_run_keeps_its_own_directory(bench):
    _, result = bench
    runs = result.out / "runs"
    assert (runs / "keyword" / "importance" / "seed1" / "decisions.jsonl").exists()
    assert (runs / "zebra" / "fixed-4" / "seed0" / "metrics.json").exists()
    assert (runs / "zebra" / "adalora" / "seed0" / "adapter" / "adapter_config.json").exists()
    assert {p.name for p in result.out.iterdir()} == {"config.json", "results.csv", "report.md", "pareto.png", "runs"}


def test_adalora_row_reflects_peft_adalora(bench):
    _, result = bench
    adalora = [r for r in result.rows if r["arm"] == "adalora"]
    fixed4 = [r for r in result.rows if r["arm"] == "fixed:4"]
    # init_r = 6 > rank 4, plus an E vector: more trainable parameters than fixed rank 4, of which some are masked.
    assert all(a["trainable_params"] > f["trainable_params"] for a, f in zip(adalora, fixed4, strict=True))
    assert all(a["effective_params"] < a["trainable_params"] for a in adalora)
    assert all(a["controller"] == "adalora" and a["kind"] == "adalora" for a in adalora)


def test_report_and_plot(bench):
    _, result = bench
    report = (result.out / "report.md").read_text()
    assert "## keyword" in report and "## zebra" in report and report.count("| arm | kind | seeds |") == 2
    assert "### Winner per budget" in report and "| 23 MiB |" in report and "16 of 16 runs finished." in report
    assert (result.out / "pareto.png").stat().st_size > 10_000
    arms = ("importance", "adalora")
    assert set(result.comparisons) == {(task, arm) for task in ("keyword", "zebra") for arm in arms}


def test_existing_directory_is_refused_without_resume(bench):
    config, _ = bench
    with pytest.raises(RunDirectoryExistsError, match="Pass --resume"):
        run_bench(config, progress=False)


def test_resume_with_other_settings_is_refused(bench):
    config, result = bench
    changed = tiny_config(result.out, tasks=config.tasks, controllers=config.controllers, seeds=2, budget_mb=[23.0],
                          steps=7, resume=True)
    with pytest.raises(ValueError, match="other settings.*steps: was 6, now 7"):
        run_bench(changed, progress=False)


def test_interrupted_bench_resumes_where_it_stopped(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "out", controllers=["fixed:2,importance"], seeds=2)
    real, calls = runner_module.execute, []

    def interrupted(run, cfg, root, resume=False):
        calls.append(run.run_id)
        if len(calls) == 3:
            (run.directory(root) / "tb").mkdir(parents=True)  # half a run on disk, as Ctrl-C leaves it
            raise KeyboardInterrupt
        return real(run, cfg, root, resume=resume)

    monkeypatch.setattr(harness_module, "execute", interrupted)
    with pytest.raises(Interrupted, match="2 of 4 runs are finished.*--resume"):
        run_bench(config, progress=False)
    assert len(read_csv(tmp_path / "out" / "results.csv")) == 2
    assert "2 of 4 runs finished" in (tmp_path / "out" / "report.md").read_text()

    calls.clear()
    config.resume = True
    result = run_bench(config, progress=False)
    assert calls == ["keyword/fixed-2/seed1", "keyword/importance/seed1"]
    assert result.skipped == 2 and result.ran == 2
    rows = read_csv(tmp_path / "out" / "results.csv")
    assert sorted(r["run_id"] for r in rows) == sorted({r["run_id"] for r in rows}) and len(rows) == 4
    assert (tmp_path / "out" / "runs" / "keyword" / "fixed-2" / "seed1.partial-1" / "tb").is_dir()

    calls.clear()
    again = run_bench(config, progress=False)  # nothing left: only the report is redrawn
    assert calls == [] and again.skipped == 4 and len(again.rows) == 4


def test_a_failed_run_is_recorded_and_retried_on_resume(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "out", controllers=["fixed:2"], seeds=2)
    real = runner_module.run_finetune

    def flaky(settings, **kwargs):
        if settings.seed == 1:
            raise RuntimeError("the machine hiccuped")
        return real(settings, **kwargs)

    monkeypatch.setattr(runner_module, "run_finetune", flaky)
    result = run_bench(config, progress=False)
    assert [r["status"] for r in result.rows] == ["ok", "error"]
    assert "RuntimeError: the machine hiccuped" in result.failed[0]["error"]
    assert "**Failed:** `keyword/fixed-2/seed1`" in (tmp_path / "out" / "report.md").read_text()

    monkeypatch.setattr(runner_module, "run_finetune", real)
    config.resume = True
    result = run_bench(config, progress=False)
    assert [r["status"] for r in result.rows] == ["ok", "ok"] and result.ran == 1


def test_budget_below_the_smallest_configuration_fails_before_any_run(tmp_path):
    config = tiny_config(tmp_path / "out", controllers=["fixed:2,greedy-memory"], budget_mb=[5.0])
    with pytest.raises(ValueError, match="greedy-memory on task 'keyword'.*budget"):
        run_bench(config, progress=False)
    assert not (tmp_path / "out").exists()


def test_unknown_task_fails_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="task 'nosuch'"):
        run_bench(tiny_config(tmp_path / "out", tasks=["synthetic:nosuch"], controllers=["fixed:2"]), progress=False)
    assert not (tmp_path / "out").exists()
