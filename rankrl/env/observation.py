"""The named, normalised observation shared by the environment and the deployed controllers.

Its size depends only on the number of groups G, never on the model, so a policy trained on a small model
can drive a larger one with the same G. Every feature has a name and fixed bounds; values are clipped into
them. The layout (G and the ordered names) is saved with every policy and checked when one is loaded.

Layouts are versioned with the environment (:data:`OBSERVATION_VERSIONS`). Environment v2 replaced the
accuracy and its change by the fraction of the run's starting error closed (``eval/gain``,
``eval/gain_delta``), which reads the same on a 2-class and a 6-class task, and added the lowest budget
the run is known to see (``budget/floor_frac``: a known trace's minimum, which rules that choose once
fit). Environment v3 measures the per-group costs against the reference memory (``grow_cost_ref``,
``freeze_free_ref``) instead of the budget in force: a cost does not move when the budget moves, so the
features at a budget of 1.0 are the ones seen at 0.5. Policies of every version deploy, because
:meth:`ObservationLayout.build` computes the features of every version from the same signals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rankrl.signals import Signals

# (name, low, high, source key in Signals.to_dict() / computed here)
_SIGNALS = (
    ("rank_frac", 0.0, 1.0),
    ("importance_share", 0.0, 1.0),
    ("grad_norm_share", 0.0, 1.0),
    ("input_variance_share", 0.0, 1.0),
    ("rank_utilization", 0.0, 1.0),
)
_STATE = (("frozen", 0.0, 1.0), ("last_change", -1.0, 1.0))
# Per-group features per environment version: v1 and v2 measure costs against the budget in force, v3
# against the reference memory.
_OF_BUDGET = (*_SIGNALS, ("grow_cost_frac", 0.0, 1.0), ("freeze_free_frac", 0.0, 1.0), *_STATE)
GROUP_FEATURE_VERSIONS: dict[int, tuple[tuple[str, float, float], ...]] = {
    1: _OF_BUDGET,
    2: _OF_BUDGET,
    3: (*_SIGNALS, ("grow_cost_ref", 0.0, 1.0), ("freeze_free_ref", 0.0, 1.0), *_STATE),
}
_LOSS = (("loss/ema_rel", 0.0, 3.0), ("loss/slope_x100", -1.0, 1.0))
_MEMORY = (
    ("memory/used_frac", 0.0, 2.0),
    ("memory/headroom_frac", -1.0, 1.0),
    ("budget/ref_frac", 0.0, 2.0),
    ("budget/trend", -1.0, 1.0),
)
# Run-level features per environment version (the group features are the same in both).
OBSERVATION_VERSIONS: dict[int, tuple[tuple[str, float, float], ...]] = {
    1: (*_LOSS, ("eval/accuracy", 0.0, 1.0), ("eval/accuracy_delta", -1.0, 1.0), *_MEMORY, ("progress", 0.0, 1.0)),
    2: (*_LOSS, ("eval/gain", -1.0, 1.0), ("eval/gain_delta", -1.0, 1.0), *_MEMORY, ("budget/floor_frac", 0.0, 2.0),
        ("progress", 0.0, 1.0)),
}
OBSERVATION_VERSIONS[3] = OBSERVATION_VERSIONS[2]  # v3 changed the group features only
OBSERVATION_VERSION = max(OBSERVATION_VERSIONS)
GLOBAL_FEATURES = OBSERVATION_VERSIONS[OBSERVATION_VERSION]
GROUP_FEATURES = GROUP_FEATURE_VERSIONS[OBSERVATION_VERSION]
_SIGNAL_GROUP_NAMES = sorted({name for features in GROUP_FEATURE_VERSIONS.values() for name, _, _ in features})


class ObservationMismatchError(ValueError):
    """A policy was built for another observation layout or number of groups."""


@dataclass(frozen=True)
class ObservationLayout:
    """Ordered feature names and bounds for G groups, in the layout of environment ``version``."""

    num_groups: int
    version: int = OBSERVATION_VERSION

    def __post_init__(self) -> None:
        if self.version not in OBSERVATION_VERSIONS:
            raise ObservationMismatchError(f"There is no observation layout v{self.version}; this rankrl knows "
                                           f"v{', v'.join(map(str, OBSERVATION_VERSIONS))}.")

    @property
    def global_features(self) -> tuple[tuple[str, float, float], ...]:
        return OBSERVATION_VERSIONS[self.version]

    @property
    def group_features(self) -> tuple[tuple[str, float, float], ...]:
        return GROUP_FEATURE_VERSIONS[self.version]

    @property
    def names(self) -> list[str]:
        """Feature names in vector order: run-level features, then ``group{g}/<feature>``."""
        return [n for n, _, _ in self.global_features] + [
            f"group{g}/{n}" for g in range(self.num_groups) for n, _, _ in self.group_features
        ]

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        features = list(self.global_features) + list(self.group_features) * self.num_groups
        lows = [lo for _, lo, _ in features]
        highs = [hi for _, _, hi in features]
        return np.asarray(lows, dtype=np.float32), np.asarray(highs, dtype=np.float32)

    def build(self, signals: Signals, *, r_max: int, last_change: list[float], progress: float,
              budget_trend: float = 0.0) -> dict[str, float]:
        """Named feature values (unclipped) from one signal reading, for every layout version.

        ``budget_trend`` is the change of the budget since the previous decision as a fraction of the
        reference memory (positive: more memory became available).
        """
        flat = signals.to_dict()
        values = {
            "loss/ema_rel": flat.get("loss/ema_rel", 1.0),
            "loss/slope_x100": 100.0 * flat.get("loss/slope_rel", 0.0),
            "eval/accuracy": flat.get("eval/accuracy", 0.0),
            "eval/accuracy_delta": flat.get("eval/accuracy_delta", 0.0),
            "eval/gain": flat.get("eval/gain", 0.0),
            "eval/gain_delta": flat.get("eval/gain_delta", 0.0),
            "memory/used_frac": flat.get("memory/used_frac", 0.0),
            "memory/headroom_frac": flat.get("memory/headroom_frac", 0.0),
            "budget/ref_frac": flat.get("budget/ref_frac", 1.0),
            "budget/floor_frac": flat.get("budget/floor_frac", flat.get("budget/ref_frac", 1.0)),
            "budget/trend": budget_trend,
            "progress": progress,
        }
        for g, group in enumerate(signals.groups):
            values[f"group{g}/rank_frac"] = group["rank"] / r_max
            values[f"group{g}/last_change"] = last_change[g]
            for name in _SIGNAL_GROUP_NAMES:
                if name not in ("rank_frac", "last_change"):
                    values[f"group{g}/{name}"] = group.get(name, 0.0)
        return values

    def vector(self, values: dict[str, float]) -> np.ndarray:
        """The observation array: values in :attr:`names` order, NaN-safe, clipped into the bounds."""
        low, high = self.bounds
        array = np.asarray([values[name] for name in self.names], dtype=np.float64)
        array = np.nan_to_num(array, nan=0.0, posinf=high.max(), neginf=low.min())
        return np.clip(array, low, high).astype(np.float32)

    def to_dict(self) -> dict:
        """What is saved with a policy."""
        return {"num_groups": self.num_groups, "features": self.names, "version": self.version}

    @classmethod
    def of(cls, saved: dict) -> ObservationLayout:
        """The layout a policy was saved with (:meth:`to_dict`): its version, or the one its names match."""
        num_groups = int(saved.get("num_groups") or 0)
        if "version" in saved:
            return cls(num_groups, int(saved["version"]))
        for version in OBSERVATION_VERSIONS:
            if list(saved.get("features", [])) == cls(num_groups, version).names:
                return cls(num_groups, version)
        return cls(num_groups)

    def check(self, saved: dict, source: str = "the policy", made: str = "trained", remedy: str | None = None) -> None:
        """Raise :class:`ObservationMismatchError` unless ``saved`` (from :meth:`to_dict`) matches.

        ``made`` says how ``source`` came to have its layout ("trained", "collected"), ``remedy`` how to fix a
        mismatch (default: the fixes for a policy).
        """
        if saved.get("num_groups") != self.num_groups:
            fix = remedy or (f"Use a policy trained with num_groups={self.num_groups}, or set the run's number of "
                             f"groups to {saved.get('num_groups')}.")
            raise ObservationMismatchError(
                f"{source} was {made} for {saved.get('num_groups')} layer groups but this run has {self.num_groups}. "
                f"{fix}"
            )
        if list(saved.get("features", [])) != self.names:
            theirs, ours = set(saved.get("features", [])), set(self.names)
            detail = (f"missing {sorted(ours - theirs)[:4]}, unexpected {sorted(theirs - ours)[:4]}"
                      if theirs != ours else "same features in another order")
            fix = remedy or ("It was trained with a different rankrl version or preset; retrain it with `rankrl train` "
                             "on this version.")
            raise ObservationMismatchError(f"{source} expects another observation layout ({detail}). {fix}")
