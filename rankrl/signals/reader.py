"""``SignalReader``: one object that owns every tracker of a run and reads named per-group features.

Per training step::

    loss = model(**batch).loss
    loss.backward()
    reader.after_backward()          # importance: gradients exist only now
    reader.update_loss(loss)
    optimizer.step(); optimizer.zero_grad()
    ...
    signals = reader.read()          # whenever a controller decides (spectral features are computed here)
    obs = signals.to_dict()          # {"loss/ema_rel": ..., "group0/importance_share": ..., ...}

Group features (``group{g}/<feature>``) aggregate module features of the group:

* sums: ``importance``, ``sensitivity``, ``complexity``; ``grad_norm`` is ``sqrt(sum of squares)``;
* shares across groups (0 when all are 0): ``importance_share``, ``sensitivity_share``,
  ``grad_norm_share`` (of squared norms), ``complexity_share``, ``input_variance_share``;
* means over the group's live modules (0 when none is live): ``numerical_rank``, ``effective_rank``,
  ``stable_rank``, ``rank_utilization``, ``top{k}_energy``;
* ``input_variance``: mean over *all* modules of the group (measurable at rank 0 too);
* ``log_complexity = log(complexity + 1e-12)``, ``rank`` (the group rank), ``live_frac``, ``frozen`` (1 when
  the group has live modules and all of them are frozen);
* with a budget: ``grow_cost_frac``, ``shrink_free_frac``, ``freeze_free_frac`` (of the budget),
  ``grow_cost_ref``, ``freeze_free_ref`` (of the reference memory), ``grow_fits`` (see
  :mod:`rankrl.budget.meter`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rankrl.budget.meter import MemoryBudget, MemoryStatus
from rankrl.lora import RankedLoRA
from rankrl.lora.slots import module_slots
from rankrl.signals.activations import InputVarianceTracker
from rankrl.signals.importance import ImportanceTracker
from rankrl.signals.loss import LossTracker
from rankrl.signals.spectral import SPECTRAL_FEATURES, module_spectral_features

_SUMMED = ("importance", "sensitivity", "complexity")
_SHARED = ("importance", "sensitivity", "complexity", "input_variance")
_LIVE_MEAN = ("numerical_rank", "effective_rank", "stable_rank", "rank_utilization")


@dataclass
class Signals:
    """One reading of every signal.

    Attributes:
        modules: Module name -> named module features.
        groups: Per group, named group features (keys without the ``group{g}/`` prefix).
        scalars: Run-level features (``loss/*``, ``eval/*``, ``memory/*``, ``importance/total``).
        memory: The memory status when a budget is set, else ``None``.
    """

    modules: dict[str, dict[str, float]]
    groups: list[dict[str, float]]
    scalars: dict[str, float]
    memory: MemoryStatus | None = None

    def to_dict(self) -> dict[str, float]:
        """Flat ``{name: float}``: run-level features, then ``group{g}/<feature>`` for every group."""
        out = dict(self.scalars)
        for g, features in enumerate(self.groups):
            out.update({f"group{g}/{key}": value for key, value in features.items()})
        return out

    def group_matrix(self, features: list[str]) -> list[list[float]]:
        """``[group][feature]`` values of the named group features (for an observation array)."""
        return [[group[name] for name in features] for group in self.groups]


class SignalReader:
    """Owns the loss, importance, input-variance and memory trackers of one :class:`~rankrl.RankedLoRA`.

    Args:
        rl: The model.
        optimizer: The training optimizer (memory figures); may be set later as ``reader.optimizer``.
        budget_bytes: Memory budget; ``None`` leaves the memory features out.
        memory_scope: ``"total"`` or ``"adapter"`` (see :class:`~rankrl.budget.meter.MemoryBudget`).
        rank_step: Rank step whose per-group cost is reported.
        importance_every: Accumulate importance on every k-th :meth:`after_backward`.
        beta1: Sensitivity EMA coefficient.
        beta2: Uncertainty EMA coefficient.
        input_variance: Install input-variance hooks.
        variance_every: Sample input variance every k-th forward call of a module.
        loss_beta: Loss EMA coefficient.
        loss_window: Window of the loss slope.
        top_k: The ``k`` of the ``top{k}_energy`` features.
    """

    def __init__(self, rl: RankedLoRA, *, optimizer: torch.optim.Optimizer | None = None,
                 budget_bytes: int | None = None,
                 memory_scope: str = "total", rank_step: int = 1, importance_every: int = 1,
                 beta1: float = 0.85, beta2: float = 0.85, input_variance: bool = True,
                 variance_every: int = 10, loss_beta: float = 0.9, loss_window: int = 20,
                 top_k: tuple[int, ...] = (1,)) -> None:
        self.rl = rl
        self.optimizer = optimizer
        self.top_k = tuple(top_k)
        self.loss = LossTracker(beta=loss_beta, window=loss_window)
        self.importance = ImportanceTracker(rl, beta1=beta1, beta2=beta2, every=importance_every)
        self.variance = InputVarianceTracker(rl, every=variance_every) if input_variance else None
        self.budget = (
            MemoryBudget(rl, budget_bytes, scope=memory_scope, step=rank_step) if budget_bytes is not None else None
        )
        self._spectral: dict[str, dict[str, float]] | None = None
        self._slots = module_slots(rl)

    # ------------------------------------------------------------------ per step
    def after_backward(self) -> bool:
        """Accumulate importance from the gradients held now (between ``backward`` and ``zero_grad``)."""
        return self.importance.accumulate()

    def update_loss(self, loss: float | torch.Tensor) -> None:
        """Record the training loss of a step."""
        self.loss.update(loss)

    def update_eval(self, accuracy: float) -> None:
        """Record an evaluation accuracy."""
        self.loss.update_eval(accuracy)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """The trackers' state: ``{"tensors": {...}, "values": {...}}`` (tensors for safetensors, values JSON)."""
        importance = self.importance.state_dict()
        values = {"loss": self.loss.state_dict(), "importance": importance["values"],
                  "variance": self.variance.state_dict() if self.variance is not None else None}
        return {"tensors": {f"importance/{k}": v for k, v in importance["tensors"].items()}, "values": values}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the model must be at the saved ranks)."""
        values = state["values"]
        self.loss.load_state_dict(values["loss"])
        prefix = "importance/"
        self.importance.load_state_dict({"values": values["importance"], "tensors": {
            k[len(prefix):]: v for k, v in state["tensors"].items() if k.startswith(prefix)}})
        if self.variance is not None and values.get("variance") is not None:
            self.variance.load_state_dict(values["variance"])

    # ------------------------------------------------------------------ reading
    def read(self, *, spectral: bool = True, memory_batch: dict | None = None) -> Signals:
        """Read every signal.

        Args:
            spectral: Recompute the spectral features (an SVD of each ``r x r`` core); otherwise the last
                computed ones are reported (zeros before the first computation).
            memory_batch: A batch for a measured forward/backward that refreshes activation figures
                (costs one extra step; see :meth:`MemoryBudget.read`).
        """
        modules = self.importance.module_features()
        grad_norms = {name: f["grad_norm"] for name, f in modules.items()}
        if spectral:
            self._spectral = module_spectral_features(self.rl, grad_norms, self.top_k, slots=self._slots)
        spectral_table = self._spectral or {}
        variances = self.variance.variances() if self.variance is not None else {}
        ranks = self.rl.ranks
        for name, features in modules.items():
            features.update(spectral_table.get(name, self._zero_spectral()))
            features["input_variance"] = variances.get(name, 0.0)
            features["rank"] = float(ranks[name])
        status = self._read_memory(memory_batch) if self.budget is not None else None
        groups = self._aggregate(modules, status)
        scalars = self.loss.features()
        scalars["importance/total"] = sum(f["importance"] for f in modules.values())
        scalars["importance/updates"] = float(self.importance.updates)
        if status is not None:
            scalars.update({k: v for k, v in status.to_dict().items() if k.startswith(("memory/", "budget/"))})
        return Signals(modules=modules, groups=groups, scalars=scalars, memory=status)

    def _read_memory(self, batch: dict | None) -> MemoryStatus:
        """Budget reading; the input-variance hooks are paused so that measuring passes are not sampled."""
        hooks = self.variance is not None and self.variance.hooks_installed > 0
        if hooks and batch is not None:
            self.variance.close()
        try:
            return self.budget.read(self.optimizer, batch)
        finally:
            if hooks and batch is not None:
                self.variance.open()

    def _zero_spectral(self) -> dict[str, float]:
        out = dict.fromkeys(SPECTRAL_FEATURES, 0.0)
        out.update({f"top{k}_energy": 0.0 for k in self.top_k})
        out["log_complexity"] = math.log(1e-12)
        return out

    def _aggregate(self, modules: dict[str, dict[str, float]], status: MemoryStatus | None) -> list[dict[str, float]]:
        groups_of = self.rl.groups
        members: list[list[str]] = [[] for _ in range(self.rl.num_groups)]
        for name in modules:
            members[groups_of[name]].append(name)
        group_ranks = self.rl.group_ranks
        energy_keys = [f"top{k}_energy" for k in self.top_k]
        frozen = set(getattr(self.rl, "frozen", ()))
        out = []
        for g, names in enumerate(members):
            live = [n for n in names if modules[n]["rank"] > 0]
            features = {"rank": float(group_ranks[g]), "live_frac": len(live) / len(names) if names else 0.0,
                        "frozen": float(bool(live) and all(n in frozen for n in live))}
            for key in _SUMMED:
                features[key] = sum(modules[n][key] for n in names)
            features["grad_norm"] = math.sqrt(sum(modules[n]["grad_norm"] ** 2 for n in names))
            for key in (*_LIVE_MEAN, *energy_keys):
                features[key] = sum(modules[n][key] for n in live) / len(live) if live else 0.0
            features["input_variance"] = sum(modules[n]["input_variance"] for n in names) / len(names) if names else 0.0
            features["log_complexity"] = math.log(features["complexity"] + 1e-12)
            out.append(features)
        for key in _SHARED:
            _add_share(out, key, key)
        _add_share(out, "grad_norm_share", "grad_norm", power=2)
        if status is not None:
            memory = status.to_dict()
            for g, features in enumerate(out):
                for key in ("grow_cost_frac", "shrink_free_frac", "freeze_free_frac", "grow_cost_ref",
                            "freeze_free_ref", "grow_fits"):
                    features[key] = memory[f"group{g}/{key}"]
        return out

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Remove the input-variance hooks."""
        if self.variance is not None:
            self.variance.close()

    def __enter__(self) -> SignalReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _add_share(groups: list[dict[str, float]], out_key: str, key: str, power: int = 1) -> None:
    """``groups[g][out_key + "_share"]`` = value / sum over groups (0 when the sum is 0)."""
    name = out_key if out_key.endswith("_share") else f"{out_key}_share"
    values = [group[key] ** power for group in groups]
    total = sum(values)
    for group, value in zip(groups, values, strict=True):
        group[name] = value / total if total > 0 else 0.0
