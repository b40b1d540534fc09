"""The complexity heuristic: a group's rank from the log of its spectral-and-gradient complexity."""

from __future__ import annotations

import math

from rankrl.controllers.base import ControllerContext, Decision, RankController
from rankrl.signals import rank_from_complexity


def round_to_step(rank: float, rank_step: int) -> int:
    """The nearest multiple of ``rank_step``."""
    return int(rank_step * round(rank / rank_step))


class ComplexityController(RankController):
    """``rank_g = clip(round(α·log(C_g) + β))`` after a uniform warm-up.

    ``C_g`` is the group's complexity: the sum over its modules of ``effective_rank(σ(scaling·B·A)) ·
    grad_norm`` (:func:`rankrl.signals.complexity_score`), large when an update already spreads over many
    directions and is still being pushed. During warm-up every group is held at one uniform rank, so that the
    scores are comparable; afterwards every decision applies the rule
    (:func:`rankrl.signals.rank_from_complexity`), rounded to ``rank_step`` and clipped to
    ``[min_rank, r_max]``. As gradients fade during training the scores fall and so do the ranks.

    Args:
        alpha: Rank per e-fold of complexity.
        beta: Offset. ``None`` calibrates it once, at the first decision after warm-up, so that the groups'
            mean ``log C`` maps to the warm-up rank (``β = r_warmup − α·mean(log C_g)``).
        warmup_steps: Steps of the uniform phase.
        warmup_rank: The uniform rank; default the mean group rank at the first decision, rounded to the step.
        min_rank: Floor of the rule. Default ``rank_step``: a group at rank 0 has ``C = 0`` (no update, no
            gradient) and could never regrow, so the floor keeps every group measurable.
    """

    name = "complexity"

    def __init__(self, alpha: float = 4.0, beta: float | None = None, warmup_steps: int = 100,
                 warmup_rank: int | None = None, min_rank: int | None = None) -> None:
        if warmup_steps < 0:
            raise ValueError(f"complexity: warmup_steps must be >= 0, got {warmup_steps}.")
        for key, value in (("warmup_rank", warmup_rank), ("min_rank", min_rank)):
            if value is not None and value < 0:
                raise ValueError(f"complexity: {key} must be >= 0, got {value}.")
        self.alpha = float(alpha)
        self.beta = beta
        self.warmup_steps = int(warmup_steps)
        self.warmup_rank = warmup_rank
        self.min_rank = min_rank
        self._uniform: int | None = None
        self._beta: float | None = beta

    def bind(self, *, num_groups: int, split_by_kind: bool, r_max: int, rank_step: int,
             total_steps: int | None) -> None:
        for key, value in (("warmup_rank", self.warmup_rank), ("min_rank", self.min_rank)):
            if value is not None and value > r_max:
                raise ValueError(f"complexity: {key}={value} is above r_max={r_max}.")

    def minimum_ranks(self, group_ranks: list[int], rank_step: int) -> list[list[int]]:
        floor = self.min_rank if self.min_rank is not None else rank_step
        return [[floor] * len(group_ranks)]  # the rule never goes below its floor

    def rank_for(self, complexity: float, ctx: ControllerContext) -> int:
        """The rule for one group: ``α·log(C) + β``, rounded to the rank step and clipped."""
        floor = self.min_rank if self.min_rank is not None else ctx.rank_step
        rank = rank_from_complexity(complexity, self.alpha, self._beta, floor, ctx.r_max)
        return min(max(round_to_step(rank, ctx.rank_step), floor), ctx.r_max)

    def decide(self, ctx: ControllerContext) -> Decision:
        if self._uniform is None:
            start = self.warmup_rank if self.warmup_rank is not None else sum(ctx.group_ranks) / ctx.num_groups
            self._uniform = min(max(round_to_step(start, ctx.rank_step), ctx.rank_step), ctx.r_max)
        if ctx.step < self.warmup_steps:
            return Decision([self._uniform] * ctx.num_groups, f"complexity: warm-up (step {ctx.step} < "
                                                             f"{self.warmup_steps}), uniform rank {self._uniform}")
        complexity = ctx.group_feature("complexity")
        logs = [math.log(c) for c in complexity if c > 0]
        if self._beta is None:
            if not logs:
                return Decision(list(ctx.group_ranks), "complexity: no complexity measured yet (no gradients); hold")
            self._beta = self._uniform - self.alpha * sum(logs) / len(logs)
        ranks = [self.rank_for(c, ctx) for c in complexity]
        detail = ", ".join(f"C{g}={c:.3g}->{r}" for g, (c, r) in enumerate(zip(complexity, ranks, strict=True)))
        return Decision(ranks, f"complexity: rank = {self.alpha:g}·log C + {self._beta:.2f}: {detail}")

    def state_dict(self) -> dict:
        return {"uniform_rank": self._uniform, "beta": self._beta}

    def load_state_dict(self, state: dict) -> None:
        self._uniform = state.get("uniform_rank")
        self._beta = state.get("beta", self.beta)
