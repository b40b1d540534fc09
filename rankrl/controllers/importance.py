"""AdaLoRA's budget recipe at the level of layer groups, with ranks physically resized so memory really falls.

AdaLoRA (Zhang et al., 2023) scores every singular triplet by smoothed sensitivity times uncertainty
(``Ī·Ū``) and keeps the best ``b(t)`` triplets, with a cubic schedule of the total rank budget::

    b(t) = b_0                                                        t <= t_i        (warm-up)
    b(t) = b_T + (b_0 - b_T) * (1 - (t - t_i) / (T - t_f - t_i))^3    t_i < t <= T - t_f
    b(t) = b_T                                                        t > T - t_f     (final: mask fixed)

AdaLoRA only masks the pruned triplets, so its tensors keep their full size. Here the budget ``b(t)`` (total
rank over groups) is split over the groups in proportion to each group's ``Σ Ī·Ū``
(:class:`~rankrl.signals.ImportanceTracker`), in whole rank steps with a floor of 0, and the ranks are
physically resized, so a group whose importance is small really goes to rank 0 and its memory is freed. In
the final phase the allocation made at its start is held, as AdaLoRA fixes its mask.
"""

from __future__ import annotations

from rankrl.controllers.allocation import allocate
from rankrl.controllers.base import ControllerContext, Decision, RankController


class ImportanceController(RankController):
    """AdaLoRA's sensitivity x uncertainty with a cubic total-rank schedule, physically resized.

    Args:
        target_rank: Mean group rank at the end of the schedule (AdaLoRA's ``target_r``); the final total is
            ``target_rank * G``. Default: half the mean rank at the first decision.
        warmup_steps: ``t_i``: steps at the initial budget (default 10% of the run).
        final_steps: ``t_f``: steps at the final budget with ranks held (default 20% of the run).
    """

    name = "importance"
    requires_total_steps = True

    def __init__(self, target_rank: float | None = None, warmup_steps: int | None = None,
                 final_steps: int | None = None) -> None:
        for key, value in (("target_rank", target_rank), ("warmup_steps", warmup_steps), ("final_steps", final_steps)):
            if value is not None and value < 0:
                raise ValueError(f"importance: {key} must be >= 0, got {value}.")
        self.target_rank = target_rank
        self.warmup_steps = warmup_steps
        self.final_steps = final_steps
        self._initial_total: int | None = None
        self._final = False

    def phases(self, total_steps: int) -> tuple[int, int]:
        """``(t_i, t_f)`` for a run of ``total_steps``."""
        t_i = self.warmup_steps if self.warmup_steps is not None else round(0.1 * total_steps)
        t_f = self.final_steps if self.final_steps is not None else round(0.2 * total_steps)
        return t_i, t_f

    def bind(self, *, num_groups: int, split_by_kind: bool, r_max: int, rank_step: int,
             total_steps: int | None) -> None:
        if total_steps is None:
            raise ValueError("importance needs total_steps (its budget schedule runs over the whole training).")
        t_i, t_f = self.phases(total_steps)
        if total_steps - t_f - t_i <= 0:
            raise ValueError(f"importance: warm-up ({t_i}) and final ({t_f}) steps leave no room for the schedule "
                             f"in {total_steps} steps; shorten them or train longer.")
        if self.target_rank is not None and self.target_rank > r_max:
            raise ValueError(f"importance: target_rank={self.target_rank} is above r_max={r_max}.")

    def budget_at(self, step: int, total_steps: int, initial: float, final: float) -> float:
        """``b(step)``: the total rank budget of the cubic schedule."""
        t_i, t_f = self.phases(total_steps)
        if step <= t_i:
            return float(initial)
        if step > total_steps - t_f:
            return float(final)
        remaining = 1.0 - (step - t_i) / (total_steps - t_f - t_i)
        return final + (initial - final) * remaining**3

    def decide(self, ctx: ControllerContext) -> Decision:
        if ctx.total_steps is None:
            raise ValueError("importance needs total_steps (its budget schedule runs over the whole training).")
        if self._initial_total is None:
            self._initial_total = sum(ctx.group_ranks)
        initial = self._initial_total
        final = self.target_rank * ctx.num_groups if self.target_rank is not None else initial / 2
        t_i, t_f = self.phases(ctx.total_steps)
        if ctx.step <= t_i:
            return Decision(list(ctx.group_ranks), f"importance: warm-up (step {ctx.step} <= {t_i}), total rank "
                                                   f"held at b_0={initial}")
        if self._final:
            return Decision(list(ctx.group_ranks), "importance: final phase, ranks held")
        budget = self.budget_at(ctx.step, ctx.total_steps, initial, final)
        weights = ctx.group_feature("importance")
        units = allocate(round(budget / ctx.rank_step), weights, ctx.r_max // ctx.rank_step)
        ranks = [u * ctx.rank_step for u in units]
        shares = ", ".join(f"{s:.2f}" for s in ctx.group_feature("importance_share"))
        phase = "schedule"
        if ctx.step > ctx.total_steps - t_f:
            self._final, phase = True, "final allocation (held from now on)"
        return Decision(ranks, f"importance: {phase}, b(t)={budget:.1f} of b_0={initial} -> b_T={final:g}, "
                               f"split by importance shares [{shares}]")

    def state_dict(self) -> dict:
        return {"initial_total": self._initial_total, "final": self._final}

    def load_state_dict(self, state: dict) -> None:
        self._initial_total = state.get("initial_total")
        self._final = bool(state.get("final", False))
