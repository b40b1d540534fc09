"""Every check that can be made before the first run, so bad input fails once, clearly, and writes nothing.

Per task the data is loaded and the model built with LoRA at the bench's rank and groups (an unknown model,
bad data or too many groups fail here); then every adaptive arm is set up as ``rankrl finetune`` sets it up
(:meth:`RankControl.setup`: one measured forward/backward), so a budget below what a controller can train
in, or a policy for another layout, fails before hours of other runs rather than in the middle. The
``oracle-static`` allocations that do not fit a budget are not errors: they are left out of the plan.
"""

from __future__ import annotations

from rankrl.bench.config import BenchConfig, TaskSpec
from rankrl.bench.plan import ADAPTIVE, ORACLE, Arm
from rankrl.budget import BudgetTooSmallError
from rankrl.data import DataError, load_task_data
from rankrl.deploy.finetune import build_controller, make_control, session_config_for, with_policy_defaults
from rankrl.session import FineTuneSession


def preflight(config: BenchConfig, tasks: list[TaskSpec], arms: list[Arm]) -> set[tuple[str, str]]:
    """Load every task and set every adaptive arm up on it; raise ``ValueError`` naming the task and arm.

    Returns:
        ``(task name, arm label)`` of the ``oracle-static`` allocations that do not fit their budget.
    """
    unfit: set[tuple[str, str]] = set()
    for task in tasks:
        try:
            data = load_task_data(task.train, task.eval, text_column=config.text_column,
                                  label_column=config.label_column, seed=0)
        except DataError as err:
            raise DataError(f"task {task.name!r} ({task.label}): {err}") from err
        settings = config.finetune_config(seed=0, out=config.out, data=task.train, eval_data=task.eval)
        session = FineTuneSession(session_config_for(settings), task=data)  # model and groups fail here
        for arm in arms:
            if arm.kind not in (ADAPTIVE, ORACLE):
                continue
            try:
                _setup(session, config, arm)
            except BudgetTooSmallError as err:
                if arm.kind != ORACLE:
                    raise BudgetTooSmallError(f"{arm.label} on task {task.name!r}: {err}") from err
                unfit.add((task.name, arm.label))
            except ValueError as err:
                raise ValueError(f"{arm.label} on task {task.name!r}: {err}") from err
    return unfit


def _setup(session: FineTuneSession, config: BenchConfig, arm: Arm) -> None:
    session.reset(seed=0)
    controller, spec = build_controller(arm.spec)
    settings = config.finetune_config(seed=0, out=config.out, controller=arm.spec, budget_mb=arm.budget_mb,
                                      budget_frac=arm.budget_frac, budget_trace=arm.budget_trace,
                                      r_max=config.r_max, rank_step=config.rank_step)
    control = make_control(session.rl, controller, spec, with_policy_defaults(controller, settings))
    try:
        control.setup(session.optimizer, session.reference_batch(), start=False)
        if arm.kind == ORACLE:  # a static allocation of the oracle grid must fit as it is, at the lowest budget
            ranks = controller.group_ranks(session.rl.num_groups)
            need = control.memory.predict_used(ranks, [False] * len(ranks))
            floor = control.memory.floor if control.memory.floor is not None else control.memory.budget
            if need > floor:
                raise BudgetTooSmallError(f"{arm.label} needs {need} bytes, above the budget's {floor}.")
    finally:
        control.close()
