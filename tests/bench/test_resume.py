"""``rankrl bench --resume``: half-written rows are re-run, interrupted runs continue, divergence is no result."""

from __future__ import annotations

import csv
import json

import pytest

from rankrl import interrupt
from rankrl.bench import run_bench
from rankrl.bench.results import COLUMNS, DIVERGED, OK, ResultsFile
from rankrl.session import FineTuneSession
from tests.bench.conftest import tiny_config
from tests.bench.helpers import row


def test_repair_drops_cut_and_malformed_rows_and_keeps_whole_ones(tmp_path):
    results = ResultsFile(tmp_path)
    good = row("t", "fixed:2", "fixed", 0, 0.7, 12.0, final_ranks="[2, 2]")
    results.append(good)
    results.append(row("t", "fixed:2", "fixed", 1, 0.7, 12.0, final_ranks="[2, 2]"))
    text = results.path.read_text()
    results.path.write_text(text[: len(text) - 40])  # the second row cut by a kill, no newline at the end
    with results.path.open("a") as handle:
        handle.write("\n" + ",".join(["t/x/seed2", "t", "x", "fixed"] + ["?"] * (len(COLUMNS) - 4)) + "\n")
    assert results.repair() == 2
    rows = results.read()
    assert [r["run_id"] for r in rows] == [good["run_id"]]
    assert results.path.read_text().endswith("\n")
    assert results.repair() == 0  # idempotent


def test_a_diverged_run_is_kept_as_diverged_and_never_counts(tmp_path):
    config = tiny_config(tmp_path / "out", controllers=["fixed:2"], seeds=1, lr=1e6, steps=6)
    result = run_bench(config, progress=False)
    assert [r["status"] for r in result.rows] == [DIVERGED]
    assert result.summaries == [] and not result.failed
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Diverged" in report and "excluded from every mean" in report
    resumed = run_bench(tiny_config(tmp_path / "out", controllers=["fixed:2"], seeds=1, lr=1e6, steps=6,
                                    resume=True), progress=False)
    assert resumed.ran == 0 and resumed.skipped == 1  # a diverged run is an outcome, not a failure to retry


def test_resume_reruns_a_half_written_row_and_continues_an_interrupted_run(tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "out", controllers=["fixed:2"], seeds=3, steps=12, every=3)
    train, calls = FineTuneSession.train, []

    def stepping(self, steps, measure_every=0):
        out = train(self, steps, measure_every)
        calls.append(self.seed)
        if self.seed == 2 and self.step == 7:
            interrupt.request()  # Ctrl-C in the middle of the third run, after its checkpoint at step 6
        return out

    monkeypatch.setattr(FineTuneSession, "train", stepping)
    try:
        with pytest.raises(interrupt.Interrupted, match="2 of 3 runs are finished"):
            run_bench(config, progress=False)
    finally:
        interrupt.clear()
    path = tmp_path / "out" / "results.csv"
    text = path.read_text()
    path.write_text(text[: len(text) - 30])  # the second row half-written
    calls.clear()
    config.resume = True
    result = run_bench(config, progress=False)
    assert [r["status"] for r in result.rows] == [OK, OK, OK]
    assert sorted(r["seed"] for r in result.rows) == [0.0, 1.0, 2.0]
    assert result.skipped == 2 and result.ran == 1  # seed 1 recovered from its metrics.json, seed 2 continued
    assert calls.count(2) == 12 - 7  # steps 8..12: Ctrl-C saved a checkpoint at step 7
    with path.open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 3
    run_dir = tmp_path / "out" / "runs" / "keyword" / "fixed-2" / "seed2"
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 12
