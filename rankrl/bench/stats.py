"""Statistics over seeds: per-arm means and standard deviations, paired comparisons, winners per budget.

A paired comparison of arm A against arm B uses the seeds both finished: the per-seed differences
``d_k = acc_A(k) - acc_B(k)`` (same data order, head initialisation and evaluation subset per seed), their
mean, sample standard deviation and the half-width ``2 * std / sqrt(n)`` of an approximate 95% interval.
When ``|mean| <= 2 * std / sqrt(n)`` the interval holds 0 and the difference is reported as *within noise*;
with a single seed there is no interval at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rankrl.bench.plan import FIXED, ORACLE
from rankrl.bench.results import DIVERGED, ERROR, OK

BETTER, WORSE, NOISE, SINGLE = "better", "worse", "within noise", "one seed: no interval"
_TOLERANCE_MIB = 1e-6


@dataclass
class Stat:
    """Mean and sample standard deviation (0 for one value) of ``n`` values."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float | None]) -> Stat | None:
        values = [v for v in values if v is not None and not math.isnan(v)]
        if not values:
            return None
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        return cls(mean, math.sqrt(var), len(values))


@dataclass
class ArmSummary:
    """One arm on one task over its finished seeds."""

    task: str
    arm: str
    kind: str
    controller: str
    rank: int
    lr: float
    budget_mb: float | None
    seeds: list[int]
    budget: str = "none"
    stats: dict[str, Stat | None] = field(default_factory=dict)
    failed: int = 0
    diverged: int = 0

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def accuracy(self) -> float:
        return self.stats["accuracy"].mean

    @property
    def memory(self) -> float:
        """Mean peak memory (MiB) in the bench's scope."""
        return self.stats["peak_memory_mib"].mean


SUMMARY_METRICS = ("accuracy", "macro_f1", "peak_memory_mib", "mean_memory_mib", "peak_memory_total_mib",
                   "peak_memory_adapter_mib", "cuda_peak_mib", "controller_state_mib", "trainable_params",
                   "peak_trainable_params", "effective_params", "wall_seconds", "controller_overhead")


@dataclass
class Paired:
    """Arm minus reference over shared seeds."""

    arm: str
    reference: str
    diffs: list[float]
    mean: float
    std: float
    half_width: float | None
    verdict: str

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval ``mean ± 2 std / sqrt(n)`` leaves out 0."""
        return self.verdict in (BETTER, WORSE)


@dataclass
class Winner:
    """The best deployable arm under one budget and how sure that is.

    ``label`` names the budget as the report's budget column does (``none``, ``400 MiB``, ``0.5x``,
    ``trace:down.csv``); ``budget_mb`` is set for absolute budgets only.
    """

    budget_mb: float | None
    winner: ArmSummary | None
    runner_up: ArmSummary | None
    margin: Paired | None
    label: str = "none"


def summarize(rows: list[dict]) -> list[ArmSummary]:
    """One summary per (task, arm) that has at least one finished run, in the order rows first appear."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["arm"]), []).append(row)
    out = []
    for (task, arm), group in groups.items():
        ok = [row for row in group if row["status"] == OK]
        if not ok:
            continue
        first = ok[0]
        summary = ArmSummary(task=task, arm=arm, kind=first["kind"], controller=first["controller"],
                             rank=int(first["start_rank"]), lr=first["lr"], budget_mb=first["budget_mb"],
                             budget=first.get("budget") or "none",
                             seeds=sorted(int(row["seed"]) for row in ok),
                             failed=sum(row["status"] == ERROR for row in group),
                             diverged=sum(row["status"] == DIVERGED for row in group))
        summary.stats = {metric: Stat.of([row.get(metric) for row in ok]) for metric in SUMMARY_METRICS}
        out.append(summary)
    return out


def paired(rows: list[dict], task: str, arm: str, reference: str, metric: str = "accuracy") -> Paired | None:
    """``arm - reference`` on ``task`` over the seeds both finished (``None`` when they share none)."""
    def by_seed(label: str) -> dict[int, float]:
        return {int(r["seed"]): r[metric] for r in rows
                if r["task"] == task and r["arm"] == label and r["status"] == OK and r[metric] is not None}

    a, b = by_seed(arm), by_seed(reference)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return paired_values(arm, reference, [a[s] - b[s] for s in seeds])


def paired_values(arm: str, reference: str, diffs: list[float]) -> Paired:
    """``arm - reference`` from paired differences (by seed, or by episode): mean, interval and verdict."""
    stat = Stat.of(diffs)
    if stat is None or stat.n < 2:
        return Paired(arm, reference, diffs, stat.mean if stat else math.nan, 0.0, None, SINGLE)
    half = 2 * stat.std / math.sqrt(stat.n)
    verdict = NOISE if abs(stat.mean) <= half else (BETTER if stat.mean > 0 else WORSE)
    return Paired(arm, reference, diffs, stat.mean, stat.std, half, verdict)


def best_fixed_within(memory_mib: float, summaries: list[ArmSummary]) -> ArmSummary | None:
    """The most accurate fixed-rank arm whose mean peak memory is at most ``memory_mib`` (ties: less memory)."""
    fixed = [s for s in summaries if s.kind == FIXED and s.memory <= memory_mib + _TOLERANCE_MIB]
    return max(fixed, key=lambda s: (s.accuracy, -s.memory), default=None)


def compare_to_fixed(rows: list[dict], summaries: list[ArmSummary]) -> dict[tuple[str, str], Paired | None]:
    """For every non-fixed arm: paired accuracy difference to the best fixed rank at equal or lower memory."""
    out: dict[tuple[str, str], Paired | None] = {}
    for summary in summaries:
        if summary.kind == FIXED:
            continue
        same_task = [s for s in summaries if s.task == summary.task]
        reference = best_fixed_within(summary.memory, same_task)
        out[(summary.task, summary.arm)] = (
            paired(rows, summary.task, summary.arm, reference.arm) if reference is not None else None)
    return out


@dataclass
class BudgetComparison:
    """One arm under one budget, against ``static-fit`` and the best ``oracle-static`` allocation there."""

    budget: str
    summary: ArmSummary
    versus_static_fit: Paired | None
    versus_oracle: Paired | None


def oracle_best(summaries: list[ArmSummary], task: str, budget: str) -> ArmSummary | None:
    """The most accurate ``oracle-static`` allocation on ``task`` under ``budget`` (chosen on the eval data)."""
    oracles = [s for s in summaries if s.task == task and s.budget == budget and s.kind == ORACLE]
    return max(oracles, key=lambda s: (s.accuracy, -s.memory), default=None)


def compare_under_budgets(rows: list[dict], summaries: list[ArmSummary], task: str) -> list[BudgetComparison]:
    """Per budget of ``task``: every non-oracle arm paired by seed with ``static-fit`` and the oracle's best."""
    out = []
    budgets = sorted({s.budget for s in summaries if s.task == task and s.budget != "none"})
    for budget in budgets:
        here = [s for s in summaries if s.task == task and s.budget == budget and s.kind != "oracle"]
        static = next((s for s in here if s.controller.startswith("static-fit")), None)
        oracle = oracle_best(summaries, task, budget)
        for summary in here:
            out.append(BudgetComparison(
                budget, summary,
                paired(rows, task, summary.arm, static.arm) if static and static is not summary else None,
                paired(rows, task, summary.arm, oracle.arm) if oracle else None))
        if oracle is not None:
            out.append(BudgetComparison(budget, oracle, paired(rows, task, oracle.arm, static.arm) if static else None,
                                        None))
    return out


def winners(rows: list[dict], summaries: list[ArmSummary], budgets: list[float]) -> list[Winner]:
    """The most accurate deployable arm per budget; oracles are upper bounds, never contenders.

    An absolute budget (``--budget-mb``) is contested by every arm whose mean peak memory fits it. A relative
    budget or a trace is a different wall in MiB on every task, so it is contested by the arms run under it.
    Without any budget there is one contest over every arm.
    """
    deployable = [s for s in summaries if s.kind != ORACLE]
    contests: list[tuple[str, float | None, list[ArmSummary]]] = [
        (f"{budget:g} MiB", budget, [s for s in deployable if s.memory <= budget + _TOLERANCE_MIB])
        for budget in budgets]
    moving = [label for label in dict.fromkeys(s.budget for s in deployable) if label.endswith("x")
              or label.startswith("trace:")]
    contests += [(label, None, [s for s in deployable if s.budget == label]) for label in moving]
    if not contests:
        contests = [("none", None, deployable)]
    out = []
    for label, budget, fits in contests:
        ranked = sorted(fits, key=lambda s: (-s.accuracy, s.memory))
        winner = ranked[0] if ranked else None
        runner = ranked[1] if len(ranked) > 1 else None
        margin = paired(rows, winner.task, winner.arm, runner.arm) if winner and runner else None
        out.append(Winner(budget, winner, runner, margin, label))
    return out
