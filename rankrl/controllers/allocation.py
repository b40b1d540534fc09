"""Split a total rank budget over groups in proportion to weights, in whole rank steps."""

from __future__ import annotations

import math


def allocate(total_units: int, weights: list[float], cap_units: int) -> list[int]:
    """Largest-remainder (Hamilton) split of ``total_units`` proportional to ``weights``, each at most ``cap_units``.

    Groups whose quota reaches the cap get the cap and the rest is re-split over the others. Groups of weight
    0 get nothing unless every remaining weight is 0, in which case the remainder is split evenly. Ties in the
    remainders go to the larger weight, then the lower index.

    Args:
        total_units: Units to hand out (e.g. total rank / rank_step); capped at ``cap_units * len(weights)``.
        weights: Non-negative weight per group.
        cap_units: Largest number of units of one group.

    Returns:
        Units per group, summing to ``min(total_units, cap_units * len(weights))``.
    """
    if any(w < 0 or not math.isfinite(w) for w in weights):
        raise ValueError(f"Weights must be finite and non-negative, got {weights}.")
    size = len(weights)
    units = [0] * size
    remaining = max(0, min(int(total_units), cap_units * size))
    active = list(range(size))
    while active and remaining > 0:
        weight = sum(weights[g] for g in active)
        share = {g: (weights[g] / weight if weight > 0 else 1.0 / len(active)) for g in active}
        full = [g for g in active if remaining * share[g] >= cap_units]
        if not full:
            quotas = {g: remaining * share[g] for g in active}
            for g in active:
                units[g] = math.floor(quotas[g])
            left = remaining - sum(units[g] for g in active)
            order = sorted(active, key=lambda g: (-(quotas[g] - units[g]), -weights[g], g))
            for g in order[:left]:
                units[g] += 1
            break
        for g in full:
            units[g] = cap_units
            remaining -= cap_units
            active.remove(g)
    return units
