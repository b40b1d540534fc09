"""From ``--controllers`` to the arms of the benchmark, and from arms, tasks and seeds to the list of runs.

An *arm* is one way of spending rank, run on every task and seed with everything else equal:

* ``fixed`` - plain LoRA at one rank; a bare ``fixed`` expands to ``--fixed-ranks`` (default 2,4,8,16), the
  fixed-rank accuracy-memory front, and ``--fixed-lrs`` runs each rank at several learning rates. Fixed
  runs have no budget: they are the reference every budgeted run is placed against.
* adaptive - a rankrl controller (``layerwise``, ``importance``, ``complexity``, ``variance``,
  ``greedy-memory``, ``static-fit``, ``autofreeze``, ``learned:PATH``) starting at ``--rank``, once per
  budget: each ``--budget-mb``, each ``--budget-frac`` (of the reference memory) and the ``--budget-trace``.
  A bare ``layerwise`` is a linear ramp from ``rank/2`` (bottom group) to ``3*rank/2`` (top), mean ``rank``.
* ``oracle-static`` - a small grid of static allocations (the top ``k`` groups at rank ``rank/2``, ``rank``
  or ``2*rank``, or only at ``R`` with ``oracle-static:rank=R``, the rest at 0), each run on every seed under
  every budget it fits (the pre-flight drops the others). The report takes the best of them per task and
  budget: an upper bound for any static rule, chosen on the evaluation data, so it is marked as an oracle.
* ``adalora`` - PEFT's own AdaLoRA (``init_r = 1.5 * rank``, ``target_r = rank``), see :mod:`.adalora`.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from pathlib import Path

from rankrl.bench.adalora import adalora_options
from rankrl.bench.config import ADALORA, KNOWN, ORACLE_STATIC, BenchConfig, TaskSpec, slug, split_controllers
from rankrl.controllers import LearnedController, make_controller
from rankrl.deploy.finetune import build_controller

FIXED, ADAPTIVE, ORACLE = "fixed", "adaptive", "oracle"
RUNS_DIR = "runs"


@dataclass(frozen=True)
class Arm:
    """One arm: how rank is spent, at which learning rate and budget.

    Attributes:
        label: Unique name in reports (``fixed:4``, ``importance``, ``importance@20mb``, ``fixed:4@lr=0.002``).
        kind: ``fixed``, ``adaptive`` or ``adalora``.
        spec: The controller spec of ``rankrl finetune`` (or ``adalora[:options]``).
        rank: Starting rank (fixed: the rank; AdaLoRA: ``target_r``).
        lr: Learning rate.
        budget_mb: The memory wall in MiB, or ``None``.
        budget_frac: The wall as a fraction of the reference memory, or ``None``.
        budget_trace: A trace file of a moving wall, or ``None``.
    """

    label: str
    kind: str
    spec: str
    rank: int
    lr: float
    budget_mb: float | None = None
    budget_frac: float | None = None
    budget_trace: str | None = None

    @property
    def budget(self) -> str:
        """The budget in words (``none``, ``512mb``, ``0.5x``, ``trace:down.csv``): one column of the report."""
        if self.budget_mb is not None:
            return f"{self.budget_mb:g}mb"
        if self.budget_frac is not None:
            return f"{self.budget_frac:g}x"
        if self.budget_trace is not None:
            return f"trace:{Path(self.budget_trace).name}"
        return "none"

    @property
    def slug(self) -> str:
        """Directory name of the arm."""
        return slug(self.label.replace(":", "-").replace("@", "-"))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PlannedRun:
    """One run: an arm on a task with a seed."""

    task: TaskSpec
    arm: Arm
    seed: int

    @property
    def run_id(self) -> str:
        """``task/arm/seed<k>``: the run's key in ``results.csv`` and its path under ``DIR/runs``."""
        return f"{self.task.name}/{self.arm.slug}/seed{self.seed}"

    def directory(self, root: str | Path) -> Path:
        """``root/runs/<task>/<arm>/seed<k>``."""
        return Path(root) / RUNS_DIR / self.run_id


def layerwise_ramp(num_groups: int, rank: int, r_max: int, rank_step: int) -> list[int]:
    """Linear ramp from ``rank/2`` (bottom group) to ``3*rank/2`` (top), on the rank grid, mean about ``rank``."""
    if num_groups == 1:
        return [rank]
    ranks = []
    for g in range(num_groups):
        target = rank * (0.5 + g / (num_groups - 1))
        ranks.append(min(r_max, max(rank_step, round(target / rank_step) * rank_step)))
    return ranks


def expand_arms(config: BenchConfig) -> list[Arm]:
    """Every arm of the benchmark, checked (unknown controllers list the known ones).

    Raises:
        ValueError: unknown or malformed controller, a controller that needs a budget without one, a
            missing policy, an arm listed twice.
    """
    arms: list[Arm] = []
    for spec in split_controllers(config.controllers):
        name, _, args = spec.partition(":")
        name = name.strip().lower()
        if name not in KNOWN:
            close = difflib.get_close_matches(name, KNOWN, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"Unknown controller '{name}' in --controllers. "
                             f"Known controllers: {', '.join(KNOWN)}.{hint}")
        if name == FIXED:
            arms += _fixed_arms(config, args)
        elif name == ORACLE_STATIC:
            arms += _oracle_arms(config, args)
        elif name == ADALORA:
            options = adalora_options(args, config.rank, config.steps, config.every)  # checks the options now
            label = ADALORA + (f":{args.strip()}" if args.strip() else "")
            arms.append(Arm(label=label, kind=ADALORA, spec=label, rank=options["target_r"], lr=config.lr))
        else:
            arms += _adaptive_arms(config, spec, name, args)
    seen: set[str] = set()
    unique = []
    for arm in arms:
        if arm.slug in seen:
            if arm.kind == FIXED:  # "fixed" and "fixed:4" overlap; run the rank once
                continue
            raise ValueError(f"--controllers lists {arm.label!r} twice.")
        seen.add(arm.slug)
        unique.append(arm)
    return unique


def _fixed_arms(config: BenchConfig, args: str) -> list[Arm]:
    if args.strip():
        controller = make_controller(f"fixed:{args.strip()}")
        if controller.rank is None or controller.rank < 1:
            raise ValueError(f"fixed:{args.strip()}: a fixed-rank run needs a rank of at least 1.")
        ranks = [controller.rank]
    else:
        ranks = list(config.fixed_ranks)
    lrs = list(config.fixed_lrs) or [config.lr]
    tag = len(lrs) > 1 or lrs[0] != config.lr
    return [Arm(label=f"fixed:{rank}" + (f"@lr={lr:g}" if tag else ""), kind=FIXED, spec=f"fixed:{rank}",
                rank=rank, lr=lr) for rank in ranks for lr in lrs]


def _adaptive_arms(config: BenchConfig, spec: str, name: str, args: str) -> list[Arm]:
    label = f"{name}:{args.strip()}" if args.strip() else name
    if name == "layerwise" and not args.strip():
        r_max = config.r_max or 2 * config.rank
        rank_step = config.rank_step or max(1, r_max // 8)
        spec = "layerwise:" + ",".join(map(str, layerwise_ramp(config.num_groups, config.rank, r_max, rank_step)))
    controller, full_spec = build_controller(spec, trust_policy=config.trust_policy)
    if isinstance(controller, LearnedController):
        label = f"learned:{controller.path.parent.name or controller.path.stem}"
    variants = budget_variants(config)
    if controller.requires_budget and not variants:
        raise ValueError(f"Controller '{name}' needs a memory budget; pass --budget-frac, --budget-mb or "
                         "--budget-trace (or drop it from --controllers).")
    return [_with_budget(Arm(label=label, kind=ADAPTIVE, spec=full_spec, rank=config.rank, lr=config.lr), budget,
                         tag=len(variants) > 1) for budget in variants or [{}]]


def budget_variants(config: BenchConfig) -> list[dict]:
    """One dict per budget of the benchmark (``budget_mb``, ``budget_frac`` or ``budget_trace``)."""
    return ([{"budget_mb": b} for b in config.budget_mb] + [{"budget_frac": f} for f in config.budget_frac]
            + ([{"budget_trace": config.budget_trace}] if config.budget_trace else []))


def _with_budget(arm: Arm, budget: dict, tag: bool) -> Arm:
    arm = Arm(**{**arm.to_dict(), **budget})
    return Arm(**{**arm.to_dict(), "label": f"{arm.label}@{arm.budget}"}) if tag and budget else arm


def oracle_grid(num_groups: int, rank: int, r_max: int, only: int | None = None) -> list[list[int]]:
    """The static allocations of ``oracle-static``: the top ``k`` groups at ``rank/2``, ``rank`` or ``2*rank``
    (or at ``only``, a smaller grid)."""
    ranks = [only] if only is not None else sorted({max(1, rank // 2), rank, min(2 * rank, r_max)})
    return [[0] * (num_groups - k) + [r] * k for k in range(1, num_groups + 1) for r in ranks]


def _oracle_arms(config: BenchConfig, args: str) -> list[Arm]:
    only = None
    if args.strip():
        key, _, value = args.strip().partition("=")
        if key.strip() != "rank" or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"{ORACLE_STATIC} takes one option, rank=R (a smaller grid at that rank only); got "
                             f"{ORACLE_STATIC}:{args}.")
        only = int(value)
    variants = budget_variants(config)
    if not variants:
        raise ValueError(f"{ORACLE_STATIC} needs a memory budget; pass --budget-frac, --budget-mb or --budget-trace.")
    r_max = config.r_max or 2 * config.rank
    arms = []
    for ranks in oracle_grid(config.num_groups, config.rank, r_max, only):
        text = ",".join(map(str, ranks))
        base = Arm(label=f"{ORACLE_STATIC}[{text}]", kind=ORACLE, spec=f"layerwise:{text}", rank=config.rank,
                   lr=config.lr)
        arms += [_with_budget(base, budget, tag=True) for budget in variants]
    return arms


def plan_runs(tasks: list[TaskSpec], arms: list[Arm], seeds: int) -> list[PlannedRun]:
    """Every run, seed-major within a task (all arms at seed 0 first), so early results are already paired."""
    return [PlannedRun(task, arm, seed) for task in tasks for seed in range(seeds) for arm in arms]
