"""``static-fit``: the best static allocation a fixed rule can choose for a budget, without looking at the task.

The baseline a skeptic asks for when a controller claims to spend memory well: choose once, before the first
step, and hold. The rule trains the **top-most groups** and leaves the rest at rank 0 (the LoRA
literature and AutoFreeze agree that the top of a pretrained encoder adapts most, and no adapter below a
depth means no backward and no saved activations there):

    for k = G, G-1, ..., 1 (groups trained, counted from the top):
        for r = cap, cap - rank_step, ..., rank_step:
            if [0] * (G - k) + [r] * k fits the budget: take it

So it keeps as many groups as possible, each at the highest uniform rank that still fits. ``cap`` is the
run's starting rank (``rank_init``), so at a budget of 1.0 of the reference it is plain LoRA at that rank.
The budget it fits is the lowest the run will see (:attr:`MemoryBudget.floor`, e.g. the minimum of a known
trace): a static allocation must survive the whole run. Groups below are set to rank 0 rather than frozen:
before the first step an adapter has learned nothing (``B = 0``), so freezing it would keep nothing and
still cost its factor bytes.

``cap`` (``static-fit:cap=0.5``) fits at most that fraction of the reference memory, however large the
budget: the rule for a run that should not spend memory that buys no accuracy. On the synthetic training
family, fixed rank 8 on the whole model never beat ``static-fit`` at half the reference beyond the seed noise
(``docs/headroom-default``), so above half the reference the rule spends nothing more.
"""

from __future__ import annotations

from rankrl.controllers.base import MIB, ControllerContext, Decision, RankController


class StaticFitController(RankController):
    """The top-most groups at the highest uniform rank that fits the budget's floor, chosen once and held.

    Args:
        rank: Highest rank considered (default: the largest starting group rank).
        cap: Fit at most this fraction of the reference memory (``None``: the whole budget).
    """

    name = "static-fit"
    requires_budget = True

    def __init__(self, rank: int | None = None, cap: float | None = None) -> None:
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"static-fit: rank must be a positive integer, got {rank!r}.")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 < cap <= 1):
            raise ValueError(f"static-fit: cap is a fraction of the reference memory in (0, 1], got {cap!r}.")
        self.rank, self.cap = rank, cap
        self._ranks: list[int] | None = None

    def decide(self, ctx: ControllerContext) -> Decision:
        if self._ranks is not None:
            return Decision(list(self._ranks), "static-fit: hold")
        budget = ctx.budget
        if budget is None:
            raise ValueError("static-fit needs a memory budget.")
        floor = budget.floor if budget.floor is not None else budget.budget
        if self.cap is not None:
            if not budget.reference:
                raise ValueError("static-fit: cap is a fraction of the reference memory, and this run has none; "
                                 "give the budget as a fraction (--budget-frac) or drop cap.")
            floor = min(floor, int(self.cap * budget.reference))
        size = ctx.num_groups
        highest = min(self.rank or max(ctx.group_ranks), ctx.r_max)
        step = ctx.rank_step
        for trained in range(size, 0, -1):
            for rank in range(highest - highest % step, 0, -step):
                ranks = [0] * (size - trained) + [rank] * trained
                used = budget.predict_used(ranks, [False] * size)
                if used <= floor:
                    self._ranks = ranks
                    return Decision(list(ranks), f"static-fit: top {trained} of {size} groups at rank {rank} "
                                                 f"({used / MIB:.2f} of {floor / MIB:.2f} MiB)")
        self._ranks = [0] * (size - 1) + [step]
        return Decision(list(self._ranks), "static-fit: nothing fits; the top group at the smallest rank")

    def state_dict(self) -> dict:
        return {"ranks": self._ranks}

    def load_state_dict(self, state: dict) -> None:
        self._ranks = state.get("ranks")
