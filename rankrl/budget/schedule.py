"""Budgets that move during a run: availability traces, trace files, and the live free memory of a GPU.

A budget is expressed against the run's **reference**: the memory of the whole model training at
``rank_init`` (every group live and trainable), measured on the reference batch before the first step.
A fraction ``0.5`` means half of that.

:class:`BudgetTrace` is a piecewise-constant budget over optimizer steps: each point ``(step, value)``
holds from its step until the next point. It comes from a CSV file (:meth:`BudgetTrace.from_csv`) or from
one of the seeded shapes the environment draws (:meth:`BudgetTrace.shape`). Every shape's lowest level is
the budget fraction it is drawn with, so a static allocation chosen for the drawn fraction fits the whole
run, and anything above it is headroom a closed-loop controller can use:

* ``constant``: the fraction throughout;
* ``step-down``: a higher level, then the fraction from a step in the middle third of the run on (a
  co-tenant job starts);
* ``step-up``: the fraction, then a higher level (the co-tenant finishes);
* ``spike``: the higher level, with a dip to the fraction for 10-25% of the run (a co-tenant's spike);
* ``sawtooth``: three or four periods, each falling in eight steps from the higher level to the fraction.

The higher level is the fraction plus a draw from ``[0.15, max(0.35, 1 - fraction)]``, at most 1.0: a
drop takes from 0.15 of the reference up to everything above the fraction (a budget of 1.0 that halves,
say, which a narrower draw never showed a policy).

:class:`LiveBudget` follows the free memory NVML reports on a CUDA device, minus a safety margin, read at
each decision; its reader is a plain callable so that tests drive it on a CPU.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIB = 1024 * 1024
TRACE_KINDS = ("constant", "step-down", "step-up", "spike", "sawtooth")
UNITS = {"budget_frac": "frac", "budget_mb": "mb"}


class BudgetTraceError(ValueError):
    """A trace file or trace setting that cannot be used; the message names the fix."""


@dataclass(frozen=True)
class BudgetTrace:
    """A piecewise-constant budget over optimizer steps.

    Attributes:
        points: ``(step, value)`` pairs, steps strictly increasing from 0; a value holds until the next step.
        unit: ``"frac"`` (of the reference memory) or ``"mb"`` (MiB).
        name: A shape name or the file it came from (logs and plots).
    """

    points: tuple[tuple[int, float], ...]
    unit: str = "frac"
    name: str = "trace"

    def __post_init__(self) -> None:
        if self.unit not in ("frac", "mb"):
            raise BudgetTraceError(f"A trace's unit is 'frac' or 'mb', got {self.unit!r}.")
        if not self.points:
            raise BudgetTraceError(f"The budget trace {self.name} has no points.")
        steps = [s for s, _ in self.points]
        if steps[0] != 0:
            raise BudgetTraceError(f"The budget trace {self.name} must start at step 0 (it starts at {steps[0]}).")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise BudgetTraceError(f"The steps of the budget trace {self.name} must increase strictly.")
        if any(not (math.isfinite(v) and v > 0) for _, v in self.points):
            raise BudgetTraceError(f"Every budget of the trace {self.name} must be a positive number.")

    def value_at(self, step: int) -> float:
        """The budget in force at optimizer step ``step`` (in :attr:`unit`)."""
        value = self.points[0][1]
        for start, level in self.points:
            if start > step:
                break
            value = level
        return value

    def bytes_at(self, step: int, reference: int) -> int:
        """The budget at ``step`` in bytes (fractions are of ``reference``)."""
        value = self.value_at(step)
        return int(value * reference) if self.unit == "frac" else int(value * MIB)

    def minimum_bytes(self, reference: int) -> int:
        """The lowest budget of the run in bytes."""
        return min(self.bytes_at(step, reference) for step, _ in self.points)

    def to_dict(self) -> dict:
        return {"name": self.name, "unit": self.unit, "points": [list(p) for p in self.points]}

    @classmethod
    def constant(cls, value: float, unit: str = "frac") -> BudgetTrace:
        """The same budget throughout."""
        return cls(((0, float(value)),), unit, "constant")

    @classmethod
    def shape(cls, kind: str, fraction: float, total_steps: int, rng: np.random.Generator) -> BudgetTrace:
        """A seeded availability trace of ``kind`` whose lowest level is ``fraction`` (module docstring)."""
        if kind not in TRACE_KINDS:
            raise BudgetTraceError(f"Unknown trace kind {kind!r}; known kinds: {', '.join(TRACE_KINDS)}.")
        if not fraction > 0:
            raise BudgetTraceError(f"The budget fraction must be positive, got {fraction}.")
        if total_steps < 2:
            raise BudgetTraceError(f"A trace needs a run of at least 2 steps, got {total_steps}.")
        high = min(1.0, fraction + float(rng.uniform(0.15, max(0.35, 1.0 - fraction))))
        high = max(high, fraction)
        T = int(total_steps)
        at = max(1, int(T * float(rng.uniform(1 / 3, 2 / 3))))
        if kind == "constant":
            points = [(0, fraction)]
        elif kind == "step-down":
            points = [(0, high), (at, fraction)]
        elif kind == "step-up":
            points = [(0, fraction), (at, high)]
        elif kind == "spike":
            width = max(1, int(T * float(rng.uniform(0.10, 0.25))))
            start = min(at, T - 1)
            points = [(0, high), (start, fraction)] + ([(start + width, high)] if start + width < T else [])
        else:  # sawtooth
            periods = int(rng.integers(3, 5))
            length = max(1, T // periods)
            points = []
            for p in range(periods):
                for i in range(8):
                    step = p * length + (i * length) // 8
                    value = high - (high - fraction) * i / 7
                    if not points or step > points[-1][0]:
                        points.append((step, value))
        return cls(tuple((int(s), round(float(v), 6)) for s, v in points), "frac", kind)

    @classmethod
    def from_csv(cls, path: str | Path) -> BudgetTrace:
        """Read a trace file: a header ``step,budget_mb`` or ``step,budget_frac``, then one row per change.

        Raises:
            BudgetTraceError: a missing, empty, unsorted, negative or non-numeric file, naming the row.
        """
        path = Path(path)
        if not path.is_file():
            raise BudgetTraceError(f"Budget trace file {path} does not exist. Give a CSV file with a header "
                                   "step,budget_mb or step,budget_frac.")
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
        if not rows:
            raise BudgetTraceError(f"Budget trace file {path} is empty. Write a header step,budget_mb (or "
                                   "step,budget_frac) and one row per budget change, starting at step 0.")
        header = [cell.strip().lower() for cell in rows[0]]
        if len(header) != 2 or header[0] != "step" or header[1] not in UNITS:
            raise BudgetTraceError(f"{path}: the header must be step,budget_mb or step,budget_frac, got "
                                   f"{','.join(rows[0])}.")
        points: list[tuple[int, float]] = []
        for number, row in enumerate(rows[1:], start=2):
            if len(row) != 2:
                raise BudgetTraceError(f"{path}, line {number}: expected 2 cells (step,budget), got {len(row)}.")
            try:
                step, value = float(row[0]), float(row[1])
            except ValueError:
                raise BudgetTraceError(f"{path}, line {number}: {','.join(row)} is not numeric.") from None
            if step < 0 or step != int(step):
                raise BudgetTraceError(f"{path}, line {number}: the step must be a whole number >= 0, got {row[0]}.")
            if not (math.isfinite(value) and value > 0):
                raise BudgetTraceError(f"{path}, line {number}: the budget must be positive, got {row[1]}.")
            if points and int(step) <= points[-1][0]:
                raise BudgetTraceError(f"{path}, line {number}: steps must increase (step {int(step)} follows "
                                       f"{points[-1][0]}); sort the file by step.")
            points.append((int(step), value))
        if not points:
            raise BudgetTraceError(f"Budget trace file {path} has a header but no rows.")
        if points[0][0] != 0:
            raise BudgetTraceError(f"{path}: the first row must be at step 0 (it is at step {points[0][0]}).")
        return cls(tuple(points), UNITS[header[1]], path.name)


def nvml_free_bytes(device_index: int = 0) -> int:
    """Free memory of a CUDA device as NVML reports it (``nvidia-ml-py``)."""
    import pynvml

    pynvml.nvmlInit()
    try:
        return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(device_index)).free)
    finally:
        pynvml.nvmlShutdown()


@dataclass
class LiveBudget:
    """A budget that follows the device's free memory: what this run holds + what is free − a margin.

    Args:
        free: Returns the device's free bytes (default NVML's, :func:`nvml_free_bytes`).
        held: Returns the bytes this run holds on the device now (default the CUDA caching allocator's).
        margin_mb: Safety margin kept free for other jobs and fragmentation.
    """

    free: Callable[[], int] | None = None
    held: Callable[[], int] | None = None
    margin_mb: float = 512.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.margin_mb) and self.margin_mb >= 0):
            raise BudgetTraceError(f"The live budget's margin must be >= 0 MiB, got {self.margin_mb}.")
        if self.free is None or self.held is None:
            import torch

            if not torch.cuda.is_available():
                raise BudgetTraceError("--budget live follows a GPU's free memory (NVML) and needs CUDA; on this "
                                       "machine give --budget-mb, --budget-frac or --budget-trace instead.")
            self.free = self.free or nvml_free_bytes
            self.held = self.held or (lambda: int(torch.cuda.memory_reserved()))

    def bytes_now(self) -> int:
        """The budget now (at least 1 byte)."""
        assert self.free is not None and self.held is not None  # both set by __post_init__
        return max(1, int(self.held() + self.free() - self.margin_mb * MIB))
