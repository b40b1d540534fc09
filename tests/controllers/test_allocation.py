"""The largest-remainder split that the importance and variance controllers use to share out a total rank."""

from __future__ import annotations

import pytest

from rankrl.controllers.allocation import allocate


@pytest.mark.parametrize(("total", "weights", "cap", "expected"), [
    (4, [1.0, 1.0], 4, [2, 2]),
    (5, [1.0, 1.0, 2.0], 4, [1, 1, 3]),
    (6, [10.0, 1.0], 4, [4, 2]),  # capped group's surplus goes to the others
    (3, [0.0, 0.0], 4, [2, 1]),  # all zero: even split, ties to the lower index
    (3, [1.0, 0.0], 2, [2, 1]),  # a zero weight gets only what the others cannot take
    (20, [1.0, 1.0], 4, [4, 4]),
])
def test_allocate(total, weights, cap, expected):
    assert allocate(total, weights, cap) == expected
