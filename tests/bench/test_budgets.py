"""``rankrl bench`` under budgets: fractions of the reference, a moving trace, static-fit and the oracle grid."""

from __future__ import annotations

import pytest

from rankrl.bench import run_bench
from rankrl.bench.plan import ORACLE, expand_arms, oracle_grid

from .conftest import tiny_config


def test_the_oracle_grid_is_the_top_groups_at_three_ranks():
    assert oracle_grid(2, 4, 8) == [[0, 2], [0, 4], [0, 8], [2, 2], [4, 4], [8, 8]]
    assert oracle_grid(3, 4, 8, only=4) == [[0, 0, 4], [0, 4, 4], [4, 4, 4]]


def test_arms_per_budget_kind(tmp_path):
    trace = tmp_path / "down.csv"
    trace.write_text("step,budget_frac\n0,1.0\n3,0.7\n")
    config = tiny_config(tmp_path / "out", controllers=["fixed:4,static-fit,oracle-static"],
                         budget_frac=[0.6, 0.9], budget_trace=str(trace))
    labels = [arm.label for arm in expand_arms(config)]
    assert labels[:4] == ["fixed:4", "static-fit@0.6x", "static-fit@0.9x", "static-fit@trace:down.csv"]
    assert "oracle-static[0,4]@0.6x" in labels and "oracle-static[8,8]@trace:down.csv" in labels


@pytest.fixture(scope="module")
def budget_bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("budgets")
    trace = root / "down.csv"
    trace.write_text("step,budget_frac\n0,1.0\n3,0.7\n")
    config = tiny_config(root / "out", controllers=["fixed:4,static-fit,autofreeze,oracle-static"],
                         budget_frac=[0.7], budget_trace=str(trace), memory_scope="adapter", seeds=1)
    return config, run_bench(config, progress=False)


def test_every_budgeted_run_stays_within_its_wall(budget_bench):
    _, result = budget_bench
    assert not result.failed
    budgeted = [r for r in result.rows if r["kind"] != "fixed"]
    assert budgeted and all(r["wall_violations"] == 0 for r in budgeted)
    assert {r["budget"] for r in budgeted} == {"0.7x", "trace:down.csv"}
    assert all(r["reference_mib"] > 0 for r in budgeted)


def test_oracle_allocations_that_do_not_fit_are_left_out(budget_bench):
    _, result = budget_bench
    oracle = {r["arm"] for r in result.rows if r["kind"] == ORACLE}
    assert "oracle-static[8,8]@0.7x" not in oracle  # more than the reference: cannot fit 0.7 of it
    assert "oracle-static[0,2]@0.7x" in oracle


def test_report_compares_each_arm_with_static_fit_and_the_oracle(budget_bench):
    config, result = budget_bench
    report = (result.out / "report.md").read_text()
    assert "### Under each budget: against `static-fit` and the best `oracle-static` allocation" in report
    assert "| 0.7x | autofreeze@0.7x | 1 |" in report and "(oracle)" in report
    assert "0.7 x the reference" in report
