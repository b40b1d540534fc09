"""Every check that can be made before the first run, so bad input fails once, clearly, and writes nothing.

Per task the data is loaded and the model built with LoRA at the bench's rank and groups (an unknown model,
bad data or too many groups fail here); then every adaptive arm is set up as ``rankrl finetune`` sets it up
(:meth:`RankControl.setup`: one measured forward/backward), so a budget below what a controller can train
in, or a policy for another layout, fails before hours of other runs rather than in the middle.
"""

from __future__ import annotations

from rankrl.bench.config import BenchConfig, TaskSpec
from rankrl.bench.plan import ADAPTIVE, Arm
from rankrl.data import DataError, load_task_data
from rankrl.deploy.finetune import build_controller, make_control, session_config_for, with_policy_defaults
from rankrl.session import FineTuneSession


def preflight(config: BenchConfig, tasks: list[TaskSpec], arms: list[Arm]) -> None:
    """Load every task and set every adaptive arm up on it; raise ``ValueError`` naming the task and arm."""
    for task in tasks:
        try:
            data = load_task_data(task.train, task.eval, text_column=config.text_column,
                                  label_column=config.label_column, seed=0, encoding=config.encoding,
                                  drop_invalid=config.drop_invalid)
        except DataError as err:
            raise DataError(f"task {task.name!r} ({task.label}): {err}") from err
        settings = config.finetune_config(seed=0, out=config.out, data=task.train, eval_data=task.eval)
        session = FineTuneSession(session_config_for(settings), task=data)  # model and groups fail here
        for arm in arms:
            if arm.kind != ADAPTIVE:
                continue
            try:
                _setup(session, config, arm)
            except ValueError as err:
                raise ValueError(f"{arm.label} on task {task.name!r}: {err}") from err


def _setup(session: FineTuneSession, config: BenchConfig, arm: Arm) -> None:
    session.reset(seed=0)
    controller, spec = build_controller(arm.spec, trust_policy=config.trust_policy)
    settings = config.finetune_config(seed=0, out=config.out, controller=arm.spec, budget_mb=arm.budget_mb,
                                      r_max=config.r_max, rank_step=config.rank_step)
    control = make_control(session.rl, controller, spec, with_policy_defaults(controller, settings))
    try:
        control.setup(session.optimizer, session.train_batch(0))
    finally:
        control.close()
