"""Budgets that move: trace files, the seeded shapes the environment draws, and the live GPU budget."""

from __future__ import annotations

import numpy as np
import pytest

from rankrl.budget import TRACE_KINDS, BudgetTrace, BudgetTraceError, LiveBudget

MIB = 1024 * 1024


def test_a_trace_is_piecewise_constant_from_each_step():
    trace = BudgetTrace(((0, 0.8), (10, 0.5), (20, 0.9)), "frac")
    assert [trace.value_at(s) for s in (0, 9, 10, 19, 20, 1000)] == [0.8, 0.8, 0.5, 0.5, 0.9, 0.9]
    assert trace.bytes_at(15, reference=1000) == 500 and trace.minimum_bytes(1000) == 500
    in_mib = BudgetTrace(((0, 300.0), (5, 200.0)), "mb")
    assert in_mib.bytes_at(5, reference=1) == 200 * MIB


def test_csv_round_trip(tmp_path):
    path = tmp_path / "down.csv"
    path.write_text("step,budget_mb\n0,300\n50,220.5\n")
    trace = BudgetTrace.from_csv(path)
    assert trace.points == ((0, 300.0), (50, 220.5)) and trace.unit == "mb" and trace.name == "down.csv"
    path.write_text("step,budget_frac\n0,1.0\n\n40,0.5\n")  # blank lines are skipped
    assert BudgetTrace.from_csv(path).points == ((0, 1.0), (40, 0.5))


@pytest.mark.parametrize(("text", "message"), [
    (None, "does not exist"),
    ("", "is empty"),
    ("steps,mb\n0,1\n", "header must be step,budget_mb or step,budget_frac"),
    ("step,budget_mb\n", "has a header but no rows"),
    ("step,budget_mb\n0,300\n20,200\n10,100\n", "line 4: steps must increase"),
    ("step,budget_mb\n0,-3\n", "line 2: the budget must be positive"),
    ("step,budget_mb\n0,lots\n", "line 2: 0,lots is not numeric"),
    ("step,budget_mb\n5,300\n", "the first row must be at step 0"),
    ("step,budget_mb\n0,300,1\n", "line 2: expected 2 cells"),
    ("step,budget_mb\n-1,300\n", "the step must be a whole number"),
])
def test_bad_trace_files_are_one_clear_error(tmp_path, text, message):
    path = tmp_path / "trace.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(BudgetTraceError, match=message):
        BudgetTrace.from_csv(path)


@pytest.mark.parametrize("kind", TRACE_KINDS)
def test_every_shape_is_seeded_and_bottoms_out_at_its_fraction(kind):
    draw = [BudgetTrace.shape(kind, 0.5, 128, np.random.default_rng(3)) for _ in range(2)]
    assert draw[0] == draw[1]  # same generator state, same trace
    trace = draw[0]
    assert trace.name == kind and trace.unit == "frac" and trace.points[0][0] == 0
    values = [v for _, v in trace.points]
    assert min(values) == pytest.approx(0.5) and max(values) <= 1.0
    if kind != "constant":
        assert max(values) >= 0.65  # a higher level of at least fraction + 0.15
    if kind == "step-down":
        assert values == sorted(values, reverse=True)
    if kind == "step-up":
        assert values == sorted(values)


@pytest.mark.parametrize("fraction", [0.35, 0.5, 0.75])
def test_a_drop_can_take_anything_above_the_floor(fraction):
    highs = [BudgetTrace.shape("step-down", fraction, 60, np.random.default_rng(seed)).points[0][1]
             for seed in range(200)]
    assert min(highs) >= fraction + 0.15 - 1e-6 and max(highs) <= 1.0
    assert max(highs) >= min(1.0, fraction + 0.35) - 0.02  # the whole way to the reference (or fraction+0.35)
    assert sum(h >= 0.95 for h in highs) >= (10 if fraction <= 0.5 else 50)  # a budget of ~1.0 that falls


def test_shape_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(BudgetTraceError, match="Unknown trace kind 'wobble'; known kinds: constant"):
        BudgetTrace.shape("wobble", 0.5, 100, rng)
    with pytest.raises(BudgetTraceError, match="must be positive"):
        BudgetTrace.shape("constant", 0.0, 100, rng)


def test_live_budget_follows_the_free_memory_minus_the_margin():
    free = iter([8000 * MIB, 3000 * MIB])
    live = LiveBudget(free=lambda: next(free), held=lambda: 1000 * MIB, margin_mb=500)
    assert live.bytes_now() == 8500 * MIB  # what it holds + what is free - the margin
    assert live.bytes_now() == 3500 * MIB  # a co-tenant job started


def test_live_budget_without_cuda_names_the_alternatives():
    with pytest.raises(BudgetTraceError, match="needs CUDA.*--budget-mb, --budget-frac or --budget-trace"):
        LiveBudget()
