"""The memory wall: the one rule by which every controller and the environment meet the budget.

Two moves, both on group ranks and frozen flags:

* :func:`clip_to_budget` takes what a controller asks for and keeps every move that frees memory (shrinks,
  rank 0, freezes). Moves that cost memory (growths, thaws) are granted group by group, most important
  first, each as large as still fits: a growth is cut back in ``rank_step`` decrements, a thaw that does
  not fit is refused. This is the AMC/HAQ style of hard constraint.
* :func:`fit_to_wall` frees memory at once when the result is still over the budget, which happens when
  the budget itself drops (a moving trace, a co-tenant job). The order is documented and fixed: freeze the
  training groups **bottom-up** (freezing keeps what a group learned, and once nothing below a depth trains
  autograd saves nothing there, the only large memory lever of a LoRA run), then drop frozen groups to rank
  0, least important first. Before the first optimizer step nothing has been learned, so the same order
  drops groups to rank 0 instead of freezing them: a fresh adapter (``B = 0``) has nothing to keep.

If not even every group at rank 0 fits, :class:`WallError` names the smallest budget that would.
"""

from __future__ import annotations

from rankrl.budget.meter import MemoryBudget

MIB = 1024 * 1024


class WallError(RuntimeError):
    """Even every group at rank 0 exceeds the memory budget (the set-up check prevents this)."""


def clip_to_budget(budget: MemoryBudget, current: list[int], requested: list[int], rank_step: int,
                   priority: list[float] | None = None, frozen: list[bool] | None = None,
                   requested_frozen: list[bool] | None = None) -> tuple[list[int], list[bool], list[int]]:
    """Largest allocation towards ``requested`` whose predicted memory fits the budget.

    Args:
        budget: The run's memory budget (its prediction is measured, see :class:`MemoryBudget`).
        current: Group ranks now.
        requested: Group ranks asked for.
        rank_step: Granularity in which a growth is cut back.
        priority: Higher first when growths compete for headroom (e.g. importance shares); ties and
            ``None`` go by group index.
        frozen: Per group, whether it is frozen now (default: none).
        requested_frozen: Per group, whether it should be frozen (default: as now).

    Returns:
        ``(ranks, frozen, clipped_groups)``: the allocation to apply and the groups whose growth or thaw
        was cut.
    """
    size = len(current)
    if len(requested) != size:
        raise ValueError(f"Expected {size} requested group ranks, got {len(requested)}.")
    frozen = list(frozen) if frozen is not None else [False] * size
    wanted = list(requested_frozen) if requested_frozen is not None else list(frozen)
    priority = priority or [0.0] * size
    ranks = [min(c, r) for c, r in zip(current, requested, strict=True)]
    # Freezes apply at once; thaws wait for the headroom.
    state = [(f or w) and r > 0 for f, w, r in zip(frozen, wanted, ranks, strict=True)]
    clipped = []
    for g in sorted(range(size), key=lambda g: (-priority[g], g)):
        if state[g] and not wanted[g]:  # a thaw (at the rank already granted)
            thawed = state.copy()
            thawed[g] = False
            if budget.would_fit(ranks, thawed):
                state = thawed
            else:
                clipped.append(g)
                continue
        target = requested[g]
        while target > ranks[g]:
            trial = ranks.copy()
            trial[g] = target
            if budget.would_fit(trial, state):
                ranks[g] = target
                break
            target = max(ranks[g], target - rank_step)
        if ranks[g] < requested[g] and g not in clipped:
            clipped.append(g)
    return ranks, [s and r > 0 for s, r in zip(state, ranks, strict=True)], sorted(clipped)


def fit_to_wall(budget: MemoryBudget, ranks: list[int], frozen: list[bool], *, fresh: bool = False,
                priority: list[float] | None = None) -> tuple[list[int], list[bool], list[int]]:
    """Free memory in the documented order (module docstring) until the allocation fits the budget.

    Args:
        budget: The run's budget.
        ranks: Group ranks.
        frozen: Per group, frozen or not.
        fresh: Nothing has been learned yet (before the first optimizer step): drop instead of freezing.
        priority: Importance per group; the least important frozen group is dropped first.

    Returns:
        ``(ranks, frozen, forced_groups)``.

    Raises:
        WallError: not even every group at rank 0 fits.
    """
    ranks, frozen = list(ranks), [f and r > 0 for f, r in zip(frozen, ranks, strict=True)]
    priority = priority or [0.0] * len(ranks)
    forced: list[int] = []
    while not budget.would_fit(ranks, frozen):
        training = [g for g in range(len(ranks)) if ranks[g] > 0 and not frozen[g]]
        held = sorted((g for g in range(len(ranks)) if frozen[g]), key=lambda g: (priority[g], g))
        if training:
            g = training[0]  # bottom-up
            if fresh:
                ranks[g] = 0
            else:
                frozen[g] = True
        elif held:
            g = held[0]
            ranks[g], frozen[g] = 0, False
        else:
            need = budget.predict_used(ranks, frozen)
            raise WallError(f"Every group at rank 0 still needs {need / MIB:.2f} MiB, above the budget of "
                            f"{budget.budget / MIB:.2f} MiB: the smallest budget this run fits in is "
                            f"{need / MIB:.2f} MiB. Raise the budget.")
        if g not in forced:
            forced.append(g)
    return ranks, frozen, forced
