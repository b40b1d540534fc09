"""Training signals of a :class:`~rankrl.RankedLoRA` run, per module and per layer group.

* :mod:`.loss`: loss EMA and slope relative to the initial loss, eval accuracy and its change;
* :mod:`.importance`: AdaLoRA sensitivity with uncertainty and gradient norm, accumulated after backward;
* :mod:`.spectral`: numerical / effective / stable rank, top-k energy and complexity of ``scaling * B @ A``;
* :mod:`.activations`: input-feature variance through forward hooks on the base layers;
* memory against the budget comes from :mod:`rankrl.budget`;
* :mod:`.reader`: :class:`SignalReader`, which owns them all and returns named features;
* :mod:`.callback`: :class:`SignalsCallback` for the Hugging Face ``Trainer`` (imported lazily).
"""

from rankrl.signals.activations import InputVarianceTracker
from rankrl.signals.importance import ImportanceTracker
from rankrl.signals.loss import LossTracker, least_squares_slope
from rankrl.signals.reader import SignalReader, Signals
from rankrl.signals.spectral import (
    complexity_score,
    module_spectral_features,
    rank_from_complexity,
    spectral_features,
)

__all__ = [
    "ImportanceTracker",
    "InputVarianceTracker",
    "LossTracker",
    "SignalReader",
    "Signals",
    "SignalsCallback",
    "complexity_score",
    "least_squares_slope",
    "module_spectral_features",
    "rank_from_complexity",
    "spectral_features",
]


def __getattr__(name: str):
    if name == "SignalsCallback":  # keeps `transformers.Trainer` machinery out of the import
        from rankrl.signals.callback import SignalsCallback

        return SignalsCallback
    raise AttributeError(f"module 'rankrl.signals' has no attribute {name!r}")
