"""Hold a learned controller to the bar: paired by seed against the rules under each budget, and against fixed
rank without one.

Reads the ``results.csv`` of one or more ``rankrl bench`` directories (rows of the same task may come from
several: a budgeted bench and an unbudgeted one) and prints, per task:

* under each budget (fraction or trace): the learned arm's accuracy minus each rule's (``static-fit``,
  ``autofreeze``, ``importance``, ...), paired by seed, with ``2 sd/sqrt(n)``; its gap to the best
  ``oracle-static`` allocation there; and its wall violations;
* without a budget: accuracy minus fixed rank 8 (paired), and the ratios of mean adapter memory and of
  training wall time (learned / fixed, means over seeds, measured in the same bench).

    python benchmarks/learned_bar.py DIR [DIR ...] [--arm learned:default] [--rules static-fit,autofreeze,importance]

``--headroom`` prints, instead, where a controller can win at all: the best static allocation and the best rule
against ``static-fit`` under each budget, and fixed rank 8 without a budget against it.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from rankrl.bench.results import ResultsFile
from rankrl.bench.stats import BETTER, WORSE, paired


def _arms(rows: list[dict], task: str, name: str) -> dict[str, str]:
    """budget -> arm label of the arm named ``name`` (its label before ``@budget``) on ``task``."""
    return {row["budget"] or "none": row["arm"] for row in rows
            if row["task"] == task and row["arm"].split("@")[0] == name}


def _cell(rows: list[dict], task: str, arm: str, reference: str | None) -> str:
    if reference is None:
        return "-"
    result = paired(rows, task, arm, reference)
    if result is None:
        return "-"
    width = f" ± {result.half_width:.3f}" if result.half_width is not None else ""
    mark = {BETTER: " ▲", WORSE: " ▼"}.get(result.verdict, "")
    return f"{result.mean:+.3f}{width}{mark}"


def _mean(rows: list[dict], task: str, arm: str, metric: str) -> float:
    values = [row[metric] for row in rows if row["task"] == task and row["arm"] == arm and row["status"] == "ok"]
    return statistics.mean(values) if values else float("nan")


def bar(rows: list[dict], learned: str, rules: list[str]) -> str:
    lines = []
    for task in dict.fromkeys(row["task"] for row in rows):
        mine = _arms(rows, task, learned)
        if not mine:
            continue
        lines += [f"## {task}", ""]
        if any(budget != "none" for budget in mine):
            lines += ["| budget | accuracy | " + " | ".join(f"− {r}" for r in rules)
                      + " | − best oracle-static | over wall |", "|" + " --- |" * (len(rules) + 4)]
        for budget, arm in mine.items():
            if budget == "none":
                continue
            references = [_arms(rows, task, rule).get(budget) for rule in rules]
            oracles = [row["arm"] for row in rows if row["task"] == task and row["kind"] == "oracle"
                       and (row["budget"] or "none") == budget]
            best = max(dict.fromkeys(oracles), key=lambda a: _mean(rows, task, a, "accuracy"), default=None)
            violations = sum(int(row["wall_violations"] or 0) for row in rows
                             if row["task"] == task and row["arm"] == arm)
            cells = [_cell(rows, task, arm, ref) for ref in references]
            lines.append(f"| {budget} | {_mean(rows, task, arm, 'accuracy'):.3f} | " + " | ".join(cells)
                         + f" | {_cell(rows, task, arm, best)} | {violations} |")
        fixed = _arms(rows, task, "fixed:8").get("none") if "none" in mine else None
        if fixed is not None:
            arm = mine["none"]
            memory = _mean(rows, task, arm, "mean_memory_mib") / _mean(rows, task, fixed, "mean_memory_mib")
            wall = _mean(rows, task, arm, "wall_seconds") / _mean(rows, task, fixed, "wall_seconds")
            train = _mean(rows, task, arm, "train_seconds") / _mean(rows, task, fixed, "train_seconds")
            lines += ["", f"Without a budget: accuracy {_mean(rows, task, arm, 'accuracy'):.3f} vs fixed:8 "
                      f"{_mean(rows, task, fixed, 'accuracy'):.3f} (paired {_cell(rows, task, arm, fixed)}); mean "
                      f"adapter memory {memory:.2f}x, wall time {wall:.2f}x, training time {train:.2f}x of fixed:8."]
        lines.append("")
    return "\n".join(lines)


def headroom(rows: list[dict], rules: list[str]) -> str:
    """Where a controller can win: per task and budget, the best static allocation (the oracle, chosen on the
    evaluation data) and the best rule against ``static-fit``, and what the moving wall costs next to fixed rank
    8 without a budget (all paired by seed)."""
    lines = ["| task | budget | static-fit | best oracle-static − static-fit | best rule − static-fit |",
             "| --- | --- | --- | --- | --- |"]
    for task in dict.fromkeys(row["task"] for row in rows):
        fit = _arms(rows, task, "static-fit")
        for budget, arm in fit.items():
            oracles = [row["arm"] for row in rows if row["task"] == task and row["kind"] == "oracle"
                       and (row["budget"] or "none") == budget]
            best = max(dict.fromkeys(oracles), key=lambda a: _mean(rows, task, a, "accuracy"), default=None)
            others = [a for a in (_arms(rows, task, r).get(budget) for r in rules if r != "static-fit") if a]
            rule = max(others, key=lambda a: _mean(rows, task, a, "accuracy"), default=None)
            lines.append(f"| {task} | {budget} | {_mean(rows, task, arm, 'accuracy'):.3f} | "
                         f"{_cell(rows, task, best, arm) if best else '-'} ({(best or '-').split('@')[0]}) | "
                         f"{_cell(rows, task, rule, arm) if rule else '-'} ({(rule or '-').split('@')[0]}) |")
        fixed = _arms(rows, task, "fixed:8").get("none")
        if fixed is not None:
            for budget, arm in fit.items():
                lines.append(f"| {task} | fixed:8, no budget − static-fit@{budget} | "
                             f"{_mean(rows, task, fixed, 'accuracy'):.3f} | {_cell(rows, task, fixed, arm)} | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="rankrl bench output directories")
    parser.add_argument("--arm", default="learned:default", help="the learned arm's label (before @budget)")
    parser.add_argument("--rules", default="static-fit,autofreeze,importance,greedy-memory",
                        help="comma-separated rules to pair it with")
    parser.add_argument("--headroom", action="store_true", help="print the headroom table instead (no learned arm)")
    args = parser.parse_args()
    rows = [row for directory in args.dirs for row in ResultsFile(directory).read()]
    print(headroom(rows, args.rules.split(",")) if args.headroom else bar(rows, args.arm, args.rules.split(",")))


if __name__ == "__main__":
    main()
