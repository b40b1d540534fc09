"""Memory against a budget: used / budget, headroom, and what a rank step or a freeze of each group costs.

``used`` is the peak a training step holds: the measured :class:`~rankrl.memory.MemoryReport` (parameters,
optimizer state, activations of a measured pass, gradients) plus two *derived* parts the report cannot see
when it is taken after ``zero_grad`` or before the first optimizer step:

* gradients of trainable parameters that hold none: one tensor of the parameter's size each;
* optimizer state of trainable parameters that have none: ``state_factor`` x their bytes plus the scalar
  state (Adam's ``step``) per parameter. Both are *measured* from the optimizer's existing state (bytes of
  state tensors shaped like their parameter / parameter bytes; 0-dim state bytes per parameter) and fall
  back to ``state_factor`` (2.0) and ``state_scalar`` (4.0), the AdamW figures, when nothing can be measured.

The cost of a rank change is split the same way:

* parameters, gradients and optimizer state: ``(d_in + d_out) * e * (2 + state_factor)`` bytes per rank
  unit of a module (exact shapes, element size ``e``), plus the scalar state of its two factors when the
  module appears or disappears (rank 0);
* activations of a live module: the ``r``-wide output of ``A`` that ``B`` saves, ``tokens * e`` per rank
  unit, with ``tokens`` measured on the module's input during a :meth:`MemoryBudget.read` with a batch;
* activations when a module crosses rank 0 are **measured**, because they are not local: if no parameter
  below a layer trains, autograd records nothing there, so detaching the lowest live group frees whole
  layers' activations, and growing it back costs them again. With a batch, a forward pass (no backward)
  is measured with the factors of the modules going to 0 frozen, or with the base weights of the modules
  leaving 0 made trainable (which records exactly what their ``A`` would save and everything downstream),
  and compared with the measured pass at the current ranks. Growing with ``lora_dropout > 0`` adds the
  dropped input and its mask, ``tokens * d_in * (e + 1)`` bytes (derived; it may count the module input
  twice, erring on the safe side). Without any batch the crossing cost is the derived local figure
  ``tokens * d_in * e`` per module, which misses those non-local effects.

A **frozen** adapter (:meth:`RankedLoRA.freeze`) keeps its factors but trains no more: it has no gradients and
no optimizer state, and autograd saves nothing for it. So freezing a module frees its gradient and state
bytes (exact shapes) and changes the saved activations the way rank 0 would (measured, as a crossing); the
factor bytes stay. Thawing costs the same back.

These figures are checked against measured differences in ``tests/budget/test_meter.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from rankrl.lora import RankedLoRA
from rankrl.lora.optim import unwrap_optimizer
from rankrl.lora.slots import base_layer, base_weight, factor_dtype, in_out_features, lora_factors, module_slots
from rankrl.memory import MemoryReport, SavedActivationMeter


@dataclass
class MemoryStatus:
    """One reading of memory against the budget (bytes).

    Attributes:
        budget: The budget.
        used: Measured + derived peak of a training step (in the budget's scope).
        derived: The derived part of ``used`` (missing gradients and optimizer state).
        grow_cost: Per group, bytes that ``+step`` rank on every module of the group adds.
        shrink_free: Per group, bytes that ``-step`` rank (floored at 0) frees.
        step: The rank step of ``grow_cost`` and ``shrink_free``.
        ranks: Module ranks at the time of the reading.
        frozen: Modules frozen at the time of the reading.
        freeze_free: Per group, bytes that freezing its training modules frees (0 when none trains).
        reference: The run's reference memory (whole model training at ``rank_init``), ``None`` when unset.
        state_factor: Optimizer-state bytes per parameter byte used for the figures.
        state_scalar: Scalar optimizer-state bytes per parameter (Adam's ``step``).
        activations_measured: Whether the activation figures come from a measured pass.
        report: The underlying measured report.
        floor: The lowest budget the run is known to see (a trace's minimum), ``None`` when unknown.
    """

    budget: int
    used: int
    derived: int
    grow_cost: list[int]
    shrink_free: list[int]
    step: int
    ranks: dict[str, int]
    frozen: frozenset[str]
    freeze_free: list[int]
    reference: int | None
    state_factor: float
    state_scalar: float
    activations_measured: bool
    report: MemoryReport = field(repr=False)
    floor: int | None = None

    @property
    def headroom(self) -> int:
        """``budget - used`` (negative when over budget)."""
        return self.budget - self.used

    @property
    def used_frac(self) -> float:
        """``used / budget``."""
        return self.used / self.budget

    @property
    def headroom_frac(self) -> float:
        """``headroom / budget``."""
        return self.headroom / self.budget

    def to_dict(self) -> dict[str, float]:
        """Named features: ``memory/*``, ``budget/*`` and per group ``grow_cost_frac``, ``shrink_free_frac``,
        ``freeze_free_frac`` (of the budget), ``grow_cost_ref``, ``freeze_free_ref`` (of the reference, or of
        the budget when there is none) and ``grow_fits``."""
        out = {
            "memory/used_frac": self.used_frac,
            "memory/headroom_frac": self.headroom_frac,
            "memory/headroom_bytes": float(self.headroom),
            "memory/used_bytes": float(self.used),
            "memory/budget_bytes": float(self.budget),
            "memory/activations_measured": float(self.activations_measured),
        }
        if self.reference:
            out["budget/ref_frac"] = self.budget / self.reference
            out["budget/floor_frac"] = min(self.budget, self.floor or self.budget) / self.reference
            out["memory/used_ref_frac"] = self.used / self.reference
        for g, (grow, free) in enumerate(zip(self.grow_cost, self.shrink_free, strict=True)):
            out[f"group{g}/grow_cost_frac"] = grow / self.budget
            out[f"group{g}/shrink_free_frac"] = free / self.budget
            out[f"group{g}/freeze_free_frac"] = self.freeze_free[g] / self.budget
            out[f"group{g}/grow_cost_ref"] = grow / (self.reference or self.budget)
            out[f"group{g}/freeze_free_ref"] = self.freeze_free[g] / (self.reference or self.budget)
            out[f"group{g}/grow_fits"] = float(grow <= self.headroom)
        return out


class MemoryBudget:
    """Compare the measured memory of a :class:`~rankrl.RankedLoRA` run with a hard budget.

    Args:
        rl: The model.
        budget_bytes: The budget.
        scope: ``"total"`` (everything, frozen base included) or ``"adapter"`` (what depends on ranks:
            everything but the frozen base weights).
        step: Rank step of the per-group costs.
        state_factor: Optimizer-state bytes per parameter byte when it cannot be measured (2.0 = AdamW).
        state_scalar: Scalar optimizer-state bytes per parameter when it cannot be measured (4.0 = AdamW's
            float32 ``step`` tensor).
    """

    def __init__(self, rl: RankedLoRA, budget_bytes: int, *, scope: str = "total", step: int = 1,
                 state_factor: float = 2.0, state_scalar: float = 4.0) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be positive, got {budget_bytes}.")
        if scope not in ("total", "adapter"):
            raise ValueError(f"scope must be 'total' or 'adapter', got {scope!r}.")
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}.")
        self.rl = rl
        self.budget = int(budget_bytes)
        self.scope = scope
        self.step = step
        self.default_state_factor = state_factor
        self.default_state_scalar = state_scalar
        self._slots = {slot.name: slot for slot in module_slots(rl)}
        self.tokens: dict[str, int] = {}
        self.reference: int | None = None
        # The lowest budget the run is known to see (a trace's minimum), for rules that choose once.
        self.floor: int | None = None
        self.last: MemoryStatus | None = None
        self._batch: dict | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        # Forward passes measured on the kept batch: "saved" maps a live set to (the ranks it was measured
        # at, saved-activation bytes), "delta" maps a crossing (live set, modules leaving 0, modules going to
        # 0 with their ranks) to the bytes it adds. Shareable between budgets reading the same batch.
        self._crossings: dict[str, dict] = {"saved": {}, "delta": {}}

    # ------------------------------------------------------------------ reading
    def _reading(self) -> MemoryStatus:
        """The last reading, for the what-if figures that are relative to it (their callers read first)."""
        if self.last is None:
            raise RuntimeError("MemoryBudget.read() has not run yet.")
        return self.last

    def read(self, optimizer: torch.optim.Optimizer | None = None, batch: dict | None = None) -> MemoryStatus:
        """Measure memory now and return the status against the budget.

        Args:
            optimizer: The training optimizer (its state is counted and its state factor measured).
            batch: A training batch (with labels). A real forward/backward on it measures activations,
                gradients and each module's token count (:meth:`RankedLoRA.measure_step`, which leaves
                training undisturbed), and forward passes on it measure rank-0 crossings. It is kept for
                later crossing measurements in :meth:`predict_used`.
        """
        self._optimizer = optimizer
        if batch is not None:
            if self._crossings.get("batch") is not batch:  # the cached what-if figures describe another batch
                self._crossings.clear()
                self._crossings.update(saved={}, delta={}, batch=batch)
            self._batch = batch
            report = self._measure_with_tokens(optimizer, batch)
        else:
            report = self.rl.memory(optimizer)
        factor, scalar = self.state_figures(optimizer)
        derived = self._missing_bytes(optimizer, factor, scalar, grads_measured=batch is not None)
        used = (report.total if self.scope == "total" else report.adapter_total) + derived
        frozen = self.frozen_now()
        self.last = MemoryStatus(self.budget, used, derived, [], [], self.step, self.rl.ranks, frozen, [],
                                 self.reference, factor, scalar, report.activations_measured, report, self.floor)
        ranks, groups = self.last.ranks, self.rl.groups
        for g in range(self.rl.num_groups):
            members = [n for n in ranks if groups[n] == g]
            self.last.grow_cost.append(self.delta_bytes({n: ranks[n] + self.step for n in members}))
            self.last.shrink_free.append(-self.delta_bytes({n: max(ranks[n] - self.step, 0) for n in members}))
            training = [n for n in members if ranks[n] > 0 and n not in frozen]
            self.last.freeze_free.append(-self.delta_bytes({}, frozen | set(training)) if training else 0)
        return self.last

    def frozen_now(self) -> frozenset[str]:
        """Modules of the model that are frozen now (:meth:`RankedLoRA.freeze`)."""
        return frozenset(getattr(self.rl, "frozen", ()))

    def _measure_with_tokens(self, optimizer: torch.optim.Optimizer | None, batch: dict) -> MemoryReport:
        tokens: dict[str, int] = {}
        handles = []
        for name, slot in self._slots.items():
            base = base_layer(slot.current())
            d_in = in_out_features(base)[0]

            def hook(module, args, name=name, d_in=d_in):
                if args and torch.is_tensor(args[0]):
                    tokens[name] = args[0].numel() // d_in

            handles.append(base.register_forward_pre_hook(hook))
        try:
            report = self.rl.memory(optimizer, batch=batch)
        finally:
            for handle in handles:
                handle.remove()
        self.tokens = tokens
        return report

    def state_figures(self, optimizer: torch.optim.Optimizer | None = None) -> tuple[float, float]:
        """``(state bytes per parameter byte, scalar state bytes per parameter)`` measured from ``optimizer``.

        Falls back to ``(state_factor, state_scalar)`` without an optimizer or before its first step.
        """
        if optimizer is None:
            return self.default_state_factor, self.default_state_scalar
        param_bytes = state_bytes = scalar_bytes = count = 0
        for param, state in unwrap_optimizer(optimizer).state.items():
            if not state:
                continue
            tensors = [v for v in state.values() if torch.is_tensor(v)]
            param_bytes += param.nbytes
            state_bytes += sum(v.nbytes for v in tensors if v.dim() > 0 and v.shape == param.shape)
            scalar_bytes += sum(v.nbytes for v in tensors if v.dim() == 0)
            count += 1
        if not param_bytes:
            return self.default_state_factor, self.default_state_scalar
        return state_bytes / param_bytes, scalar_bytes / count

    def _missing_bytes(self, optimizer: torch.optim.Optimizer | None, factor: float, scalar: float,
                       grads_measured: bool) -> int:
        trainable = list(self.rl.trainable_parameters())
        missing = 0 if grads_measured else sum(p.nbytes for p in trainable if p.grad is None)
        state = unwrap_optimizer(optimizer).state if optimizer is not None else {}
        without = [p for p in trainable if not state.get(p)]
        return missing + int(sum(factor * p.nbytes + scalar for p in without))

    # ------------------------------------------------------------------ costs
    def delta_bytes(self, new_ranks: dict[str, int], frozen: set[str] | frozenset[str] | None = None) -> int:
        """Bytes that changing module ranks (and the frozen set) from those of the last reading adds.

        Args:
            new_ranks: Module name -> new rank; modules not named keep their rank.
            frozen: Every module frozen after the change (``None``: the frozen set of the reading). Modules
                at rank 0 are never frozen.

        Negative values are bytes freed. Crossings of the training set (rank 0, freeze, thaw) are measured on
        the kept batch when there is one (see the module docstring).
        """
        status = self.last if self.last is not None else self.read()
        factor, scalar = status.state_factor, status.state_scalar
        dropout = float(self.rl.lora_config.lora_dropout or 0.0)
        ranks = {**status.ranks, **new_ranks}
        new_frozen = {n for n in (status.frozen if frozen is None else frozen) if ranks.get(n, 0) > 0}
        total = 0
        stop, start, thaw = set(), set(), set()
        for name, old in status.ranks.items():
            new = ranks[name]
            was_training = old > 0 and name not in status.frozen
            training = new > 0 and name not in new_frozen
            if new == old and was_training == training:
                continue
            d_in, d_out = in_out_features(self._slots[name].current())
            elem = self._element_size(name)
            tokens = self.tokens.get(name, 0)
            per_rank = (d_in + d_out) * elem
            total += (new - old) * per_rank  # the factors themselves, trained or frozen
            if training:  # gradients, optimizer state and its scalar per factor
                total += int(new * per_rank * (1 + factor) + 2 * scalar)
            if was_training:
                total -= int(old * per_rank * (1 + factor) + 2 * scalar)
            if was_training and training:
                total += (new - old) * tokens * elem  # B's saved input is r wide
            elif was_training:
                stop.add(name)
            elif training and old == 0:
                start.add(name)
                total += new * tokens * elem + (tokens * d_in * (elem + 1) if dropout > 0 else 0)
            elif training:
                thaw.add(name)  # measured at its old rank
                total += (new - old) * tokens * elem
        if stop or start or thaw:
            total += self._crossing_activations(frozenset(stop), frozenset(start), frozenset(thaw))
        return total

    def _crossing_activations(self, stop: frozenset, start: frozenset, thaw: frozenset) -> int:
        """Activation bytes added (negative: freed) when modules leave or join the training set.

        ``stop``: training modules going to rank 0 or frozen; ``start``: modules growing from rank 0;
        ``thaw``: frozen modules training again. Measured as the difference of two what-if forward passes on
        the kept batch: the training set after the change against the one now, at the current ranks. The
        difference is cached by the crossing until another batch is read, so a crossing seen before costs
        nothing (the environment revisits them constantly).
        """
        status = self._reading()
        ranks = status.ranks
        if self._batch is None or not status.activations_measured:
            delta = 0
            for name in stop | start | thaw:
                module = self._slots[name].current()
                elem = self._element_size(name)
                tokens = self.tokens.get(name, 0)
                local = tokens * in_out_features(module)[0] * elem
                if name in start:
                    delta += local
                elif name in thaw:
                    delta += local + ranks[name] * tokens * elem
                else:
                    delta -= local + ranks[name] * tokens * elem
            return delta
        training, frozen = self._training_sets()
        # Ranks of modules that keep training cancel in the difference; those that stop or thaw do not.
        key = (training, frozen, start, frozenset((n, ranks[n]) for n in stop), frozenset((n, ranks[n]) for n in thaw))
        deltas = self._crossings["delta"]
        if key not in deltas:
            deltas[key] = self._what_if_activations(stop, start, thaw) - self._saved_now()
        return deltas[key]

    def _training_sets(self) -> tuple[frozenset[str], frozenset[str]]:
        """``(training modules, frozen modules)`` of the model now."""
        frozen = self.frozen_now()
        training = frozenset(n for n, r in self.rl.ranks.items() if r > 0 and n not in frozen)
        return training, frozen

    def _saved_now(self) -> int:
        """Saved-activation bytes of a training forward at the current ranks on the kept batch.

        Measured once per training set (and frozen set). Within a training set, ranks change only the
        ``r``-wide output of ``A`` that each ``B`` saves (``tokens * e`` bytes per rank unit, the figure
        :meth:`delta_bytes` uses and the tests check against measured passes), so another rank configuration
        of the same live set is the measured figure plus that exact difference.
        """
        ranks = self.rl.ranks
        key = self._training_sets()
        saved = self._crossings["saved"]
        if key not in saved:
            saved[key] = (dict(ranks), self._what_if_activations(frozenset(), frozenset(), frozenset()))
        measured_at, nbytes = saved[key]
        return nbytes + sum((ranks[name] - measured_at[name]) * self.tokens.get(name, 0) * self._element_size(name)
                            for name in key[0])

    def _element_size(self, name: str) -> int:
        """Bytes per element of the LoRA factors of module ``name``."""
        module = self._slots[name].current()
        return torch.empty(0, dtype=factor_dtype(module, self.rl.adapter_name)).element_size()

    def measure_kept_batch(self) -> int:
        """Saved-activation bytes of a training step at the current ranks on the kept batch.

        One forward pass (no backward: autograd saves during the forward) per live set, cached with the
        crossing figures. The result becomes the model's measured figure
        (:meth:`~rankrl.RankedLoRA.record_activations`), so the next :meth:`read` reports memory on the
        kept batch, whose shape does not change, rather than on whatever batch trained last.
        """
        if self._batch is None:
            raise ValueError("No kept batch: call read(optimizer, batch) first.")
        saved = self._saved_now()
        self.rl.record_activations(saved)
        return saved

    def crossings_state(self) -> dict:
        """The measured what-if figures, JSON-ready: a resumed run reloads them and repeats no measuring pass
        the interrupted run had cached (and so reads memory exactly as it would have)."""
        return {kind: [[_encode_key(key), value] for key, value in cache.items()]
                for kind, cache in self._crossings.items()}

    def load_crossings_state(self, state: dict) -> None:
        """Reload :meth:`crossings_state` (for the kept batch read last; the figures depend only on its shapes)."""
        for kind, items in state.items():
            self._crossings[kind] = {_decode_key(key): _decode_value(value) for key, value in items}

    def share_crossings(self, cache: dict) -> None:
        """Keep measured crossing figures in ``cache``, shared with other budgets that read the same batch
        object on the same model architecture (the environment shares one per task across episodes).

        Measured figures are always valid for the same batch: what autograd saves depends only on shapes
        and on which parameters train, not on their values.
        """
        cache.setdefault("saved", {})
        cache.setdefault("delta", {})
        cache.setdefault("batch", self._batch)
        self._crossings = cache

    def _what_if_activations(self, stop: frozenset, start: frozenset, thaw: frozenset) -> int:
        """Saved-activation bytes of one training-mode forward on the kept batch with gradient flags changed.

        Stopping flips a module's factors off, thawing flips them on, and a module growing from rank 0 is
        stood in for by its base weight made trainable, which records what its ``A`` would save.
        """
        batch = self._batch
        if batch is None:
            raise RuntimeError("What-if passes run on the kept batch: read(batch=...) first.")
        adapter = self.rl.adapter_name
        flags: list[torch.Tensor] = []
        for name in stop | thaw:
            flags += list(lora_factors(self._slots[name].current(), adapter) or ())
        for name in start:
            flags.append(base_weight(self._slots[name].current()))
        saved = [(p, p.requires_grad) for p in flags]
        model = self.rl.model
        was_training = model.training
        device = next(model.parameters()).device
        try:
            for p in flags:
                p.requires_grad_(not p.requires_grad)
            model.train()
            meter = SavedActivationMeter(exclude=[*model.parameters(), *model.buffers()])
            devices = [device] if device.type == "cuda" else []
            with self.rl.unobserved(), torch.random.fork_rng(devices=devices), torch.enable_grad(), meter:
                model(**batch)
        finally:
            for p, flag in saved:
                p.requires_grad_(flag)
            model.train(was_training)
        return meter.bytes

    def predict_used(self, group_ranks: list[int] | dict[str, int], frozen_groups: list[bool] | None = None) -> int:
        """Predicted ``used`` at other ranks (a list per group, or module name -> rank) and frozen groups.

        It is the last reading's ``used`` plus :meth:`delta_bytes`; the reading is refreshed first (with the
        same optimizer and batch) when the model's ranks or frozen modules changed since.

        Args:
            group_ranks: Target ranks.
            frozen_groups: Per group, whether its live modules are frozen (``None``: the frozen modules now).
        """
        status = self.last
        if status is None or status.ranks != self.rl.ranks or status.frozen != self.frozen_now():
            status = self.read(self._optimizer, self._batch)
        if isinstance(group_ranks, dict):
            unknown = set(group_ranks) - set(status.ranks)
            if unknown:
                raise ValueError(f"Unknown LoRA modules {sorted(unknown)[:3]}; use the keys of rl.ranks.")
            new_ranks = group_ranks
        else:
            if len(group_ranks) != self.rl.num_groups:
                raise ValueError(f"Expected {self.rl.num_groups} group ranks, got {len(group_ranks)}.")
            new_ranks = {name: group_ranks[g] for name, g in self.rl.groups.items()}
        frozen = None
        if frozen_groups is not None:
            if len(frozen_groups) != self.rl.num_groups:
                raise ValueError(f"Expected {self.rl.num_groups} frozen flags, got {len(frozen_groups)}.")
            frozen = {name for name, g in self.rl.groups.items() if frozen_groups[g]}
        return status.used + self.delta_bytes(new_ranks, frozen)

    def would_fit(self, group_ranks: list[int] | dict[str, int], frozen_groups: list[bool] | None = None) -> bool:
        """Whether those ranks (and frozen groups) keep ``used`` within the budget: the hard wall."""
        return self.predict_used(group_ranks, frozen_groups) <= self.budget


def _encode_key(key):
    """A cache key (nested tuples and frozensets of names and ``(name, rank)`` pairs) as JSON."""
    if isinstance(key, frozenset):
        return {"set": sorted((_encode_key(item) for item in key), key=json.dumps)}
    if isinstance(key, tuple):
        return {"tuple": [_encode_key(item) for item in key]}
    return key


def _decode_key(data):
    if isinstance(data, dict) and "set" in data:
        return frozenset(_decode_key(item) for item in data["set"])
    if isinstance(data, dict) and "tuple" in data:
        return tuple(_decode_key(item) for item in data["tuple"])
    return data


def _decode_value(value):
    """``(ranks, bytes)`` pairs of the ``saved`` cache come back from JSON as lists."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], dict):
        return dict(value[0]), int(value[1])
    return value
