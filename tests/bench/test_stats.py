"""Means over seeds, paired differences with their noise verdict, the fixed reference and the winners."""

from __future__ import annotations

import pytest

from rankrl.bench.stats import BETTER, NOISE, SINGLE, WORSE, compare_to_fixed, paired, summarize, winners
from tests.bench.helpers import front_rows, row


def test_summaries_average_over_seeds():
    summaries = {s.arm: s for s in summarize(front_rows())}
    assert summaries["fixed:4"].n == 3 and summaries["fixed:4"].accuracy == pytest.approx(0.75)
    assert summaries["fixed:4"].stats["accuracy"].std == pytest.approx(0.01)
    assert summaries["fixed:4"].memory == 13.0


def test_paired_difference_and_its_verdict():
    rows = front_rows()
    good = paired(rows, "t", "good", "fixed:4")
    assert good.n == 3 and good.mean == pytest.approx(0.032) and good.verdict == BETTER and good.excludes_zero
    assert paired(rows, "t", "noisy", "fixed:4").verdict == NOISE
    assert paired(rows, "t", "tiny", "fixed:2").verdict == WORSE
    single = paired([r for r in rows if r["seed"] == 0], "t", "good", "fixed:4")
    assert single.verdict == SINGLE and single.half_width is None and not single.excludes_zero
    assert paired(rows, "t", "good", "missing") is None


def test_reference_is_the_best_fixed_rank_at_equal_or_lower_memory():
    rows = front_rows()
    comparisons = compare_to_fixed(rows, summarize(rows))
    assert comparisons[("t", "good")].reference == "fixed:4"  # 13 MiB: rank 4, not rank 8
    assert comparisons[("t", "noisy")].reference == "fixed:4"  # 14 MiB: rank 8 needs 15
    assert comparisons[("t", "tiny")] is None  # cheaper than every fixed rank
    assert ("t", "fixed:4") not in comparisons


def test_failed_runs_are_left_out_of_the_means():
    rows = front_rows() + [row("t", "good", "adaptive", 3, 0.0, 0.0, status="error")]
    good = {s.arm: s for s in summarize(rows)}["good"]
    assert good.n == 3 and good.failed == 1


def test_winner_per_budget_with_the_noise_of_its_lead():
    rows = front_rows()
    summaries = summarize(rows)
    by_budget = {w.budget_mb: w for w in winners(rows, summaries, [11.5, 13.5, 20.0])}
    assert by_budget[11.5].winner.arm == "tiny" and by_budget[11.5].runner_up is None
    assert by_budget[13.5].winner.arm == "good" and by_budget[13.5].runner_up.arm == "fixed:4"
    assert by_budget[13.5].margin.verdict == BETTER
    assert by_budget[20.0].winner.arm == "fixed:8"
    assert winners(rows, summaries, [5.0])[0].winner is None
    assert winners(rows, summaries, [])[0].budget_mb is None


def test_relative_budgets_and_traces_each_get_their_own_winner_and_oracles_never_win():
    rows = [row("t", "fixed:8", "fixed", s, 0.90, 30.0) for s in range(3)]
    for seed, noise in enumerate((0.0, 0.01, -0.01)):
        rows += [row("t", "static-fit@0.5x", "adaptive", seed, 0.70 + noise, 10.0, budget="0.5x"),
                 row("t", "autofreeze@0.5x", "adaptive", seed, 0.75 + noise, 8.0, budget="0.5x"),
                 row("t", "oracle-static[0,8]@0.5x", "oracle", seed, 0.85 + noise, 9.0, budget="0.5x"),
                 row("t", "static-fit@trace:down.csv", "adaptive", seed, 0.72 + noise, 10.0, budget="trace:down.csv"),
                 row("t", "importance@trace:down.csv", "adaptive", seed, 0.71 + noise, 25.0,
                     budget="trace:down.csv")]
    by_label = {w.label: w for w in winners(rows, summarize(rows), [])}
    assert set(by_label) == {"0.5x", "trace:down.csv"}  # fixed:8 ran under neither wall
    assert by_label["0.5x"].winner.arm == "autofreeze@0.5x" and by_label["0.5x"].runner_up.arm == "static-fit@0.5x"
    assert by_label["0.5x"].margin.verdict == BETTER
    assert by_label["trace:down.csv"].winner.arm == "static-fit@trace:down.csv"
    assert by_label["trace:down.csv"].margin.verdict == BETTER
    # An absolute budget is contested by every deployable arm that fits it, whatever wall it ran under.
    (absolute,) = [w for w in winners(rows, summarize(rows), [12.0]) if w.budget_mb == 12.0]
    assert absolute.label == "12 MiB" and absolute.winner.arm == "autofreeze@0.5x"
