"""``autofreeze``: AutoFreeze (Liu et al., 2021, arXiv 2102.01386), freezing converged layers bottom-up.

AutoFreeze watches, at every evaluation interval, how much each trainable layer's gradient norm changed
since the previous interval. A layer whose change is small relative to the others has converged; it is
frozen, but only from the bottom up (a layer is frozen only once every layer below it is), so the backward
pass gets shorter and the activations below the frozen prefix are no longer saved. The paper reports up to
2.55x faster BERT fine-tuning at unchanged accuracy, and finds that freezing a fixed prefix from the start
loses accuracy.

Here a layer is a group of layers, the interval is the controller's decision interval, and the test is the
paper's percentile rule: the bottom-most training group is frozen when its relative gradient-norm change
``|n_t - n_{t-1}| / n_{t-1}`` is at or below the ``percentile`` of the changes of all training groups.
The top-most training group is never frozen, and ranks never change (AutoFreeze does not resize). Memory
comes from the shared wall like every controller's: under a budget that drops, the wall freezes bottom-up
as well.
"""

from __future__ import annotations

import numpy as np

from rankrl.controllers.base import ControllerContext, Decision, RankController


class AutoFreezeController(RankController):
    """Freeze the bottom-most training group once its gradient norm stops changing (AutoFreeze).

    Args:
        percentile: The percentile of the training groups' gradient-norm changes at or below which the
            bottom-most one is frozen (the paper's threshold; 50 = the median).
    """

    name = "autofreeze"

    def __init__(self, percentile: float = 50.0) -> None:
        if not 0 <= percentile <= 100:
            raise ValueError(f"autofreeze: percentile must be in [0, 100], got {percentile}.")
        self.percentile = float(percentile)
        self._previous: list[float] | None = None

    def minimum_ranks(self, group_ranks: list[int], rank_step: int) -> list[list[int]]:
        return [[rank_step if g == len(group_ranks) - 1 else 0 for g in range(len(group_ranks))]]

    def decide(self, ctx: ControllerContext) -> Decision:
        ranks = list(ctx.group_ranks)
        frozen = list(ctx.frozen) if ctx.frozen else [False] * ctx.num_groups
        norms = ctx.group_feature("grad_norm")
        previous, self._previous = self._previous, norms
        training = [g for g in range(ctx.num_groups) if ranks[g] > 0 and not frozen[g]]
        if previous is None or len(training) < 2:
            return Decision(ranks, "autofreeze: watching gradient norms", frozen=frozen)
        changes = {g: abs(norms[g] - previous[g]) / previous[g] if previous[g] > 0 else float("inf")
                   for g in training}
        # method='lower': the threshold is one of the observed changes, never interpolated, so a group whose
        # previous norm was 0 (change inf) cannot turn it into inf - inf.
        threshold = float(np.percentile(list(changes.values()), self.percentile, method="lower"))
        bottom = training[0]
        if changes[bottom] <= threshold:
            frozen[bottom] = True
            return Decision(ranks, f"autofreeze: group {bottom} converged (gradient-norm change "
                                   f"{changes[bottom]:.3f} <= p{self.percentile:g} {threshold:.3f}); freeze it",
                            frozen=frozen)
        return Decision(ranks, f"autofreeze: group {bottom} still moving ({changes[bottom]:.3f} > "
                               f"{threshold:.3f})", frozen=frozen)

    def state_dict(self) -> dict:
        return {"previous": self._previous}

    def load_state_dict(self, state: dict) -> None:
        self._previous = state.get("previous")
