"""Loss trend and evaluation accuracy of a training run, as scale-free features.

Every loss figure is divided by the *initial loss* (the first finite loss seen), so that the same policy
reads runs on tasks with different loss scales alike:

* ``ema_rel``: bias-corrected exponential moving average of the training loss / initial loss;
* ``slope_rel``: least-squares slope of the last ``window`` losses against the step index / initial loss,
  i.e. the relative change of the loss per step (negative while the loss falls);
* ``last_rel``: the latest finite loss / initial loss.

A non-finite loss (NaN or inf) is never folded into the statistics: it sets :attr:`LossTracker.diverged`
and is counted, so that a controller can stop or penalise the run.
"""

from __future__ import annotations

import math
from collections import deque

import torch


def least_squares_slope(values: list[float]) -> float:
    """Slope of the least-squares line through ``(i, values[i])``; 0 for fewer than two points."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    sxx = sum((i - mean_x) ** 2 for i in range(n))
    sxy = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(values))
    return sxy / sxx


class LossTracker:
    """Smoothed training loss, its trend, and evaluation accuracy with its change.

    Args:
        beta: EMA coefficient of the training loss (``ema = beta * ema + (1 - beta) * loss``).
        window: Number of recent losses the slope is fitted on.

    Example:
        >>> tracker = LossTracker()
        >>> for loss in (1.0, 0.9, 0.8):
        ...     tracker.update(loss)
        >>> tracker.slope_rel < 0
        True
    """

    def __init__(self, beta: float = 0.9, window: int = 20) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}.")
        if window < 2:
            raise ValueError(f"window must be at least 2 to fit a slope, got {window}.")
        self.beta = beta
        self.window = window
        self.reset()

    def reset(self) -> None:
        """Forget every loss and evaluation seen."""
        self.steps = 0
        self.nonfinite = 0
        self.initial: float | None = None
        self.last: float | None = None
        self._ema = 0.0
        self._ema_count = 0
        self._recent: deque[float] = deque(maxlen=self.window)
        self.eval_accuracy: float | None = None
        self.eval_delta = 0.0
        self.best_eval_accuracy: float | None = None
        self.first_eval_accuracy: float | None = None
        self.evals = 0

    def state_dict(self) -> dict:
        """Everything seen so far (JSON-ready)."""
        return {"steps": self.steps, "nonfinite": self.nonfinite, "initial": self.initial, "last": self.last,
                "ema": self._ema, "ema_count": self._ema_count, "recent": list(self._recent),
                "eval_accuracy": self.eval_accuracy, "eval_delta": self.eval_delta,
                "best_eval_accuracy": self.best_eval_accuracy, "first_eval_accuracy": self.first_eval_accuracy,
                "evals": self.evals}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.reset()
        self.steps, self.nonfinite = int(state["steps"]), int(state["nonfinite"])
        self.initial, self.last = state["initial"], state["last"]
        self._ema, self._ema_count = float(state["ema"]), int(state["ema_count"])
        self._recent.extend(float(v) for v in state["recent"])
        self.eval_accuracy, self.eval_delta = state["eval_accuracy"], float(state["eval_delta"])
        self.best_eval_accuracy, self.evals = state["best_eval_accuracy"], int(state["evals"])
        # Saved before the run's first accuracy was kept: the best stands in (a gain is then understated).
        self.first_eval_accuracy = state.get("first_eval_accuracy", self.best_eval_accuracy)

    # ------------------------------------------------------------------ updates
    def update(self, loss: float | torch.Tensor) -> None:
        """Record the training loss of one step (a float or a scalar tensor; a tensor is read with ``.item()``)."""
        value = float(loss.detach().float().item()) if torch.is_tensor(loss) else float(loss)
        self.steps += 1
        if not math.isfinite(value):
            self.nonfinite += 1
            return
        if self.initial is None:
            self.initial = value
        self.last = value
        self._ema = self.beta * self._ema + (1.0 - self.beta) * value
        self._ema_count += 1
        self._recent.append(value)

    def update_eval(self, accuracy: float) -> None:
        """Record an evaluation accuracy (in [0, 1]); its change from the previous evaluation is kept too."""
        accuracy = float(accuracy)
        self.eval_delta = 0.0 if self.eval_accuracy is None else accuracy - self.eval_accuracy
        self.eval_accuracy = accuracy
        if self.best_eval_accuracy is None or accuracy > self.best_eval_accuracy:
            self.best_eval_accuracy = accuracy
        if self.first_eval_accuracy is None:
            self.first_eval_accuracy = accuracy
        self.evals += 1

    # ------------------------------------------------------------------ views
    @property
    def diverged(self) -> bool:
        """Whether any recorded loss was NaN or infinite."""
        return self.nonfinite > 0

    @property
    def _scale(self) -> float:
        if self.initial is None:
            return 1.0
        return max(abs(self.initial), 1e-12)

    @property
    def ema(self) -> float | None:
        """Bias-corrected EMA of the finite losses (``None`` before the first one)."""
        if self._ema_count == 0:
            return None
        return self._ema / (1.0 - self.beta**self._ema_count)

    @property
    def ema_rel(self) -> float:
        """EMA / initial loss (1.0 before any loss)."""
        ema = self.ema
        return 1.0 if ema is None else ema / self._scale

    @property
    def last_rel(self) -> float:
        """Latest finite loss / initial loss (1.0 before any loss)."""
        return 1.0 if self.last is None else self.last / self._scale

    @property
    def slope(self) -> float:
        """Least-squares slope of the last ``window`` finite losses per step (0 with fewer than two)."""
        return least_squares_slope(list(self._recent))

    @property
    def slope_rel(self) -> float:
        """:attr:`slope` / initial loss: relative loss change per step."""
        return self.slope / self._scale

    @property
    def _error_at_start(self) -> float:
        """``1 - first accuracy``: the error there was to close (floored, so a near-perfect start stays finite)."""
        first = 0.0 if self.first_eval_accuracy is None else self.first_eval_accuracy
        return max(1.0 - first, 0.05)

    @property
    def eval_gain(self) -> float:
        """Fraction of the first evaluation's error closed since: ``(acc - acc_0) / (1 - acc_0)``.

        Unlike the accuracy itself this does not depend on the number of classes: an untrained head starts
        near 1/C on a C-class task, and a gain of 0.5 means half the way from there to perfect on any task.
        0 before the second evaluation.
        """
        if self.eval_accuracy is None or self.first_eval_accuracy is None:
            return 0.0
        return (self.eval_accuracy - self.first_eval_accuracy) / self._error_at_start

    def features(self) -> dict[str, float]:
        """Named features: ``loss/*`` and ``eval/*`` (evaluation figures are 0 before the first evaluation)."""
        return {
            "loss/ema_rel": self.ema_rel,
            "loss/last_rel": self.last_rel,
            "loss/slope_rel": self.slope_rel,
            "loss/initial": 0.0 if self.initial is None else self.initial,
            "loss/steps": float(self.steps),
            "loss/diverged": float(self.diverged),
            "eval/accuracy": 0.0 if self.eval_accuracy is None else self.eval_accuracy,
            "eval/accuracy_delta": self.eval_delta,
            "eval/gain": self.eval_gain,
            "eval/gain_delta": self.eval_delta / self._error_at_start,
            "eval/best_accuracy": 0.0 if self.best_eval_accuracy is None else self.best_eval_accuracy,
            "eval/count": float(self.evals),
        }
