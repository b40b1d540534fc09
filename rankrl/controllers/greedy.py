"""Greedy memory filling: grow the most important group while the budget allows, shrink the least when over."""

from __future__ import annotations

from rankrl.controllers.base import MIB, ControllerContext, Decision, RankController


class GreedyMemoryController(RankController):
    """One rank step per decision, spent where the importance is and taken where it is not.

    Each decision, with ``used`` the predicted memory at the current ranks:

    * over budget: shrink the least important live group by ``rank_step``;
    * else, if ``+rank_step`` on the most important group below ``r_max`` fits the budget: grow it;
    * else hold.

    Importance is each group's ``importance_share`` (AdaLoRA ``Σ Ī·Ū``); ties go to the lower group index.
    """

    name = "greedy-memory"
    requires_budget = True

    def decide(self, ctx: ControllerContext) -> Decision:
        budget = ctx.budget
        if budget is None:
            raise ValueError("greedy-memory needs a memory budget.")
        ranks = list(ctx.group_ranks)
        shares = ctx.group_feature("importance_share")
        used = budget.predict_used(ranks)
        if used > budget.budget:
            live = sorted((g for g in range(len(ranks)) if ranks[g] > 0), key=lambda g: (shares[g], g))
            if not live:
                return Decision(ranks, "greedy-memory: over budget with every group at rank 0; hold")
            g = live[0]
            ranks[g] = max(0, ranks[g] - ctx.rank_step)
            return Decision(ranks, f"greedy-memory: over budget by {(used - budget.budget) / MIB:.3f} MiB, shrink "
                                   f"group {g} (least important, share {shares[g]:.2f})")
        growable = sorted((g for g in range(len(ranks)) if ranks[g] < ctx.r_max), key=lambda g: (-shares[g], g))
        if not growable:
            return Decision(ranks, "greedy-memory: every group at r_max; hold")
        g = growable[0]
        trial = list(ranks)
        trial[g] = min(ranks[g] + ctx.rank_step, ctx.r_max)
        headroom = (budget.budget - used) / MIB
        if budget.would_fit(trial):
            return Decision(trial, f"greedy-memory: headroom {headroom:.3f} MiB fits +{trial[g] - ranks[g]} on "
                                   f"group {g} (most important, share {shares[g]:.2f})")
        return Decision(ranks, f"greedy-memory: headroom {headroom:.3f} MiB is too small for +{trial[g] - ranks[g]} "
                               f"on group {g} (most important, share {shares[g]:.2f}); hold")
