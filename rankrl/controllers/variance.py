"""The variance heuristic: a fixed total rank split over the groups by their input-feature variance."""

from __future__ import annotations

from rankrl.controllers.allocation import allocate
from rankrl.controllers.base import ControllerContext, Decision, RankController


class VarianceController(RankController):
    """Rank in proportion to each group's input-feature variance, out of a fixed total rank.

    The rule: a group whose inputs vary more carries more signal for a low-rank update to pick up,
    so it gets more rank. Implemented as a split of a fixed total rank (default: the run's total at the first
    decision, so memory stays near its start) over the groups in proportion to ``input_variance ** power``
    (:class:`~rankrl.signals.InputVarianceTracker`: mean over the group's modules of the per-feature token
    variance of their inputs, measurable at rank 0 too), in whole rank steps (largest remainder), each group
    at most ``r_max``. ``power > 1`` sharpens the split.

    Args:
        total_rank: Total rank over all groups; default the total at the first decision.
        power: Exponent on the variances.
    """

    name = "variance"

    def __init__(self, total_rank: int | None = None, power: float = 1.0) -> None:
        if total_rank is not None and total_rank < 0:
            raise ValueError(f"variance: total_rank must be >= 0, got {total_rank}.")
        if not power > 0:
            raise ValueError(f"variance: power must be positive, got {power}.")
        self.total_rank = total_rank
        self.power = float(power)
        self._total: int | None = None

    def decide(self, ctx: ControllerContext) -> Decision:
        if self._total is None:
            self._total = self.total_rank if self.total_rank is not None else sum(ctx.group_ranks)
        variance = ctx.group_feature("input_variance")
        if not any(v > 0 for v in variance):
            return Decision(list(ctx.group_ranks), "variance: no input-variance samples yet; hold")
        units = allocate(self._total // ctx.rank_step, [max(v, 0.0) ** self.power for v in variance],
                         ctx.r_max // ctx.rank_step)
        ranks = [u * ctx.rank_step for u in units]
        detail = ", ".join(f"{v:.3g}" for v in variance)
        return Decision(ranks, f"variance: total rank {self._total} split by input variance^{self.power:g} [{detail}]")

    def state_dict(self) -> dict:
        return {"total": self._total}

    def load_state_dict(self, state: dict) -> None:
        self._total = state.get("total")
