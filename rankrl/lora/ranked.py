"""``RankedLoRA``: a PEFT LoRA model whose per-module ranks change during training and free memory.

PEFT can create a LoRA adapter at any rank but cannot change the rank of a live one, and AdaLoRA only masks
singular values, so its tensors keep their full size. ``RankedLoRA`` replaces the adapter tensors of a
module by tensors of the new size (see :mod:`rankrl.lora.factors` for the algebra and
:mod:`rankrl.lora.optim` for the optimizer), and at rank 0 takes the LoRA wrapper out of the model
entirely, so the memory is really released. After every change the PEFT config (``r``, ``rank_pattern``,
``alpha_pattern``, ``exclude_modules``) describes the model exactly, so ``save_pretrained`` writes an
adapter that vanilla ``PeftModel.from_pretrained`` loads with identical logits.

:meth:`RankedLoRA.freeze` is the other way to stop training a module: its factors keep their values (the
update it learned stays in the model) but stop requiring grad and leave the optimizer, so they get no
gradients and no optimizer state, and once nothing below a layer trains autograd saves nothing there.
"""

from __future__ import annotations

import copy
import math
import numbers
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from peft.tuners.lora import LoraLayer, LoraModel
from torch import nn

from rankrl.lora.factors import grow_factors, lora_scaling, shrink_factors
from rankrl.lora.groups import assign_groups
from rankrl.lora.optim import ParamChange, apply_param_changes, optimizer_state_bytes, unwrap_optimizer
from rankrl.memory import (
    MemoryReport,
    SavedActivationMeter,
    device_figures,
    gradient_bytes,
    parameter_bytes,
)

_UNSUPPORTED_OPTIONS = {
    "use_dora": "DoRA adds a magnitude vector that a rank change would have to re-derive",
    "lora_bias": "a LoRA bias on B cannot be split between kept and new rank",
}
_SUPPORTED_INITS = (True, False, "gaussian")


class RankedLoRAError(ValueError):
    """Invalid use of :class:`RankedLoRA`; the model is left unchanged when it is raised."""


class RankedLoRA:
    """A PEFT LoRA model with live, memory-freeing rank changes per module and per layer group.

    Build one with :meth:`attach`. Module names are those of the wrapped transformers model (the keys PEFT
    uses in ``rank_pattern``), e.g. ``"bert.encoder.layer.0.attention.self.query"``.

    Attributes:
        model: The ``PeftModel``.
        adapter_name: The adapter being resized.
        num_groups: Number of layer groups G.
    """

    def __init__(self, peft_model: PeftModel, num_groups: int = 4, split_by_kind: bool = False,
                 adapter_name: str = "default") -> None:
        if not isinstance(peft_model, PeftModel):
            raise RankedLoRAError(f"RankedLoRA wraps a peft.PeftModel, got {type(peft_model).__name__}; "
                                  "use RankedLoRA.attach(model).")
        config = peft_model.peft_config.get(adapter_name)
        if not isinstance(config, LoraConfig):
            raise RankedLoRAError(f"Adapter '{adapter_name}' is not a LoRA adapter.")
        _check_supported(config)
        self.model = peft_model
        self.adapter_name = adapter_name
        self._config = config
        root = peft_model.base_model.model
        if not isinstance(root, nn.Module):
            raise RankedLoRAError(f"The PEFT model wraps a {type(root).__name__}, not a torch module.")
        self._root: nn.Module = root
        ranks: dict[str, int] = {}
        self._alphas: dict[str, float] = {}
        for name, module in self._root.named_modules():
            if isinstance(module, LoraLayer) and adapter_name in module.lora_A:
                ranks[name] = module.r[adapter_name]
                self._alphas[name] = module.lora_alpha[adapter_name]
        for name in config.exclude_modules or []:
            if name not in ranks and _has_module(self._root, name):
                ranks[name] = 0
                self._alphas[name] = _pattern_value(config.alpha_pattern or {}, name, config.lora_alpha)
        if not ranks:
            raise RankedLoRAError("The PEFT model has no LoRA modules to resize.")
        order = {n: i for i, (n, _) in enumerate(self._root.named_modules())}
        self._ranks = dict(sorted(ranks.items(), key=lambda item: order.get(item[0], len(order))))
        self._groups = assign_groups(list(self._ranks), num_groups, split_by_kind)
        self.num_groups = num_groups * (2 if split_by_kind else 1)
        self.split_by_kind = split_by_kind
        self._frozen: set[str] = set()  # live modules whose factors do not train (see freeze())
        self._last_activations: int | None = None
        self._params: tuple[nn.Parameter, ...] | None = None  # see parameters()
        self._buffer_bytes: int | None = None
        # True during forward passes that are not part of the run (what-if memory measurements, prefix-cache
        # fills): signal hooks skip them, so what a run observes does not depend on what happened to be
        # cached. Set it with unobserved().
        self.measuring = False
        self._sync_config()

    # ------------------------------------------------------------------ construction
    @classmethod
    def attach(
        cls,
        model: nn.Module,
        rank: int = 8,
        num_groups: int = 4,
        *,
        split_by_kind: bool = False,
        target_modules: list[str] | str | None = None,
        adapter_name: str = "default",
        **lora_options,
    ) -> RankedLoRA:
        """Inject LoRA into ``model`` with PEFT and return it wrapped for resizing.

        Args:
            model: A transformers model (sequence classification gets its head trained and saved).
            rank: Initial rank of every targeted module (at least 1).
            num_groups: Number of depth groups G.
            split_by_kind: Split each depth group into attention and MLP groups (2G groups).
            target_modules: PEFT ``target_modules``; default: every linear layer inside the numbered
                transformer blocks (attention and MLP projections).
            adapter_name: PEFT adapter name.
            **lora_options: Further ``LoraConfig`` fields (``lora_alpha``, ``lora_dropout``, ``use_rslora``,
                ``init_lora_weights``, ``modules_to_save``, ...). ``use_dora`` and ``lora_bias`` are refused.

        Raises:
            RankedLoRAError: bad rank, unsupported option, or targets that match no module. The model is
                not modified in that case.
        """
        from rankrl.models import linear_module_names

        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise RankedLoRAError(f"The initial rank must be a positive integer, got {rank!r}.")
        for key, why in _UNSUPPORTED_OPTIONS.items():
            if lora_options.get(key):
                raise RankedLoRAError(f"{key}=True is not supported by RankedLoRA: {why}. Drop {key} to resize ranks.")
        init = lora_options.get("init_lora_weights", True)
        if init not in _SUPPORTED_INITS:
            raise RankedLoRAError(
                f"init_lora_weights={init!r} is not supported: it changes the base weights, which a rank change "
                f"cannot undo. Use one of {_SUPPORTED_INITS}."
            )
        names = [name for name, _ in model.named_modules()]
        targets = _resolve_targets(model, names, target_modules, linear_module_names)
        exclude = lora_options.pop("exclude_modules", None)
        if exclude:
            probe = LoraConfig(target_modules=targets, exclude_modules=exclude)
            targets = [t for t in targets if not _excluded(probe, t)]
            if not targets:
                raise RankedLoRAError(f"exclude_modules={exclude!r} excludes every target module.")
        task_type = lora_options.pop("task_type", None)
        if task_type is None and type(model).__name__.endswith("ForSequenceClassification"):
            task_type = TaskType.SEQ_CLS
        lora_options.setdefault("lora_alpha", 8)
        config = LoraConfig(r=rank, target_modules=targets, task_type=task_type, **lora_options)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecation chatter inside PEFT
            peft_model = get_peft_model(model, config, adapter_name=adapter_name)
        return cls(peft_model, num_groups=num_groups, split_by_kind=split_by_kind, adapter_name=adapter_name)

    # ------------------------------------------------------------------ views
    @property
    def ranks(self) -> dict[str, int]:
        """Module name -> current rank (0 where the adapter is detached)."""
        return dict(self._ranks)

    @property
    def groups(self) -> dict[str, int]:
        """Module name -> layer group index."""
        return dict(self._groups)

    @property
    def group_ranks(self) -> list[int]:
        """Largest rank in each group (all modules of a group share it after :meth:`set_group_ranks`)."""
        out = [0] * self.num_groups
        for name, rank in self._ranks.items():
            out[self._groups[name]] = max(out[self._groups[name]], rank)
        return out

    def group_modules(self, group: int) -> list[str]:
        """Names of the modules in ``group``."""
        self._check_group(group)
        return [name for name, g in self._groups.items() if g == group]

    def lora_layer(self, name: str) -> LoraLayer | None:
        """The PEFT ``LoraLayer`` of a module, or ``None`` while the module is at rank 0."""
        module = self._root.get_submodule(name)
        return module if isinstance(module, LoraLayer) else None

    @property
    def lora_config(self) -> LoraConfig:
        """The PEFT ``LoraConfig`` of the adapter being resized (kept in sync with the live ranks)."""
        return self._config

    @property
    def root(self) -> nn.Module:
        """The transformers model inside the PEFT wrappers (where the module names are looked up)."""
        return self._root

    def _live_layer(self, name: str) -> LoraLayer:
        """The ``LoraLayer`` of a module that has rank > 0 (the callers' precondition)."""
        layer = self.lora_layer(name)
        if layer is None:
            raise RankedLoRAError(f"'{name}' is at rank 0: it has no LoRA layer.")
        return layer

    def _factor_linears(self, layer: LoraLayer) -> tuple[nn.Linear, nn.Linear]:
        """``(lora_A, lora_B)`` of this adapter: the linears whose weights are the factors ``A`` and ``B``."""
        A, B = layer.lora_A[self.adapter_name], layer.lora_B[self.adapter_name]
        if not isinstance(A, nn.Linear) or not isinstance(B, nn.Linear):
            raise RankedLoRAError(f"LoRA factors of type {type(A).__name__}/{type(B).__name__}: only linear factors "
                                  "can be resized.")
        return A, B

    def parameters(self) -> tuple[nn.Parameter, ...]:
        """Every parameter of the model, frozen ones included, cached until the next :meth:`resize`.

        A walk of the module tree costs about a millisecond on MiniLM-L6 and a decision needs the parameters
        several times (trainable count, bytes, gradients, optimizer state), while only a resize changes which
        parameters exist. Call :meth:`refresh` after changing the model's modules yourself.
        """
        if self._params is None:
            self._params = tuple(self.model.parameters())
        return self._params

    def refresh(self) -> None:
        """Forget the cached parameter list and buffer size (after changing the model's modules by hand)."""
        self._params = None
        self._buffer_bytes = None

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters that require grad (LoRA factors and saved heads)."""
        return (p for p in self.parameters() if p.requires_grad)

    @property
    def frozen(self) -> set[str]:
        """Names of the frozen modules (live adapters that keep their factors but do not train)."""
        return set(self._frozen)

    @property
    def frozen_groups(self) -> list[bool]:
        """Per group: whether it has live modules and all of them are frozen."""
        return [self.group_frozen(g) for g in range(self.num_groups)]

    def group_frozen(self, group: int) -> bool:
        """Whether ``group`` has live modules and all of them are frozen."""
        live = [name for name in self.group_modules(group) if self._ranks[name] > 0]
        return bool(live) and all(name in self._frozen for name in live)

    def scaling(self, name: str) -> float | None:
        """Current PEFT scaling of a module, ``None`` at rank 0."""
        rank = self._ranks[name]
        return lora_scaling(self._alphas[name], rank, self._config.use_rslora) if rank else None

    # ------------------------------------------------------------------ resizing
    def set_group_ranks(self, ranks: list[int], optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
        """Give every module of group ``g`` the rank ``ranks[g]``; see :meth:`resize`."""
        if len(ranks) != self.num_groups:
            raise RankedLoRAError(f"Expected {self.num_groups} group ranks, got {len(ranks)}.")
        return self.resize({name: ranks[g] for name, g in self._groups.items()}, optimizer=optimizer)

    def set_group_rank(self, group: int, rank: int, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
        """Give every module of one group the same rank."""
        self._check_group(group)
        return self.resize({name: rank for name in self.group_modules(group)}, optimizer=optimizer)

    def resize(self, new_ranks: dict[str, int], optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
        """Change module ranks in place, mid-training.

        Growing keeps the function exactly; shrinking keeps the best low-rank approximation; rank 0 removes
        the module's adapter from the model; growth from 0 restores a fresh one (B = 0). When ``optimizer``
        is given, replaced tensors leave it and new ones enter it, with Adam moments carried on growth and
        reset on shrink (:mod:`rankrl.lora.optim`). A frozen module stays frozen at its new rank (its new
        factors never enter the optimizer) until rank 0 drops it; growth from 0 is always trainable.

        Args:
            new_ranks: Module name -> new rank (non-negative int). Modules not named keep their rank.
            optimizer: The optimizer training the model (a torch optimizer or HF Trainer's wrapped one).

        Returns:
            The modules whose rank changed, name -> new rank.

        Raises:
            RankedLoRAError: unknown module or invalid rank; nothing is changed.
        """
        for name, rank in new_ranks.items():
            if name not in self._ranks:
                raise RankedLoRAError(f"Unknown LoRA module '{name}'. Known modules are the keys of .ranks, "
                                      f"e.g. {next(iter(self._ranks))!r}.")
            if isinstance(rank, bool) or not isinstance(rank, numbers.Integral):
                raise RankedLoRAError(f"Rank of '{name}' must be an integer, got {rank!r}.")
            if int(rank) < 0:
                raise RankedLoRAError(f"Rank of '{name}' must be >= 0, got {rank}.")
        changes: list[ParamChange] = []
        changed = {}
        for name, rank in new_ranks.items():
            rank = int(rank)
            old = self._ranks[name]
            if rank == old:
                continue
            if old == 0:
                changes += self._restore(name, rank)
            elif rank == 0:
                changes += self._detach(name)
                self._frozen.discard(name)
            else:
                changes += self._resize_live(name, old, rank, frozen=name in self._frozen)
            self._ranks[name] = rank
            changed[name] = rank
        if changed:
            self.refresh()
            self._sync_config()
            self._last_activations = None  # the measured figure described the old ranks
            if optimizer is not None:
                apply_param_changes(optimizer, changes)
        return changed

    def _resize_live(self, name: str, old: int, rank: int, frozen: bool = False) -> list[ParamChange]:
        layer = self._live_layer(name)
        adapter = self.adapter_name
        lin_A, lin_B = self._factor_linears(layer)
        old_A, old_B = lin_A.weight, lin_B.weight
        old_scaling = layer.scaling[adapter]
        new_scaling = lora_scaling(self._alphas[name], rank, self._config.use_rslora)
        with torch.no_grad():
            if rank > old:
                new_rows = torch.empty(rank - old, old_A.shape[1], dtype=old_A.dtype, device=old_A.device)
                _init_like_peft(new_rows, self._config.init_lora_weights, rank)
                A, B = grow_factors(old_A, old_B, rank, old_scaling, new_scaling, new_rows)
            else:
                A, B = shrink_factors(old_A, old_B, rank, old_scaling, new_scaling)
        new_A = _linear_from(A, old_A)
        new_B = _linear_from(B, old_B)
        layer.lora_A[adapter] = new_A
        layer.lora_B[adapter] = new_B
        layer.r[adapter] = rank
        layer.scaling[adapter] = new_scaling
        if frozen:
            new_A.weight.requires_grad_(False)
            new_B.weight.requires_grad_(False)
            return [ParamChange(old_A, None, "freeze"), ParamChange(old_B, None, "freeze")]
        if rank > old:
            ratio = new_scaling / old_scaling  # gradient of the kept part of B scales by s_new / s_old
            return [
                ParamChange(old_A, new_A.weight, "grow", dim=0),
                ParamChange(old_B, new_B.weight, "grow", dim=1, moment_scale=ratio),
            ]
        return [ParamChange(old_A, new_A.weight, "shrink"), ParamChange(old_B, new_B.weight, "shrink")]

    def _detach(self, name: str) -> list[ParamChange]:
        layer = self._live_layer(name)
        params = [linear.weight for linear in self._factor_linears(layer)]
        parent, child = _parent_of(self._root, name)
        setattr(parent, child, layer.get_base_layer())
        return [ParamChange(p, None, "remove") for p in params]

    # ------------------------------------------------------------------ freezing
    def freeze(self, targets: int | str | list[int] | list[str],
               optimizer: torch.optim.Optimizer | None = None) -> list[str]:
        """Stop training modules while keeping what they learned.

        The factors keep their values exactly (the model's outputs do not change by a bit), stop requiring
        grad, drop their gradients, and leave ``optimizer`` with their state freed. Once every adapter below a
        layer is frozen or at rank 0, autograd saves nothing below it. Unlike rank 0, the factors stay in
        the model (and in :meth:`save_pretrained`'s adapter); :meth:`thaw` trains them again.

        Args:
            targets: A group index, a list of group indices, a module name, or a list of module names. Modules
                at rank 0 inside a targeted group are skipped (they have no adapter).
            optimizer: The optimizer training the model (a torch optimizer or accelerate's wrapper).

        Returns:
            Names of the modules that were not frozen before, in model order.

        Raises:
            RankedLoRAError: unknown module or group, or a named module at rank 0; nothing is changed.
        """
        names = self._freeze_targets(targets, "freeze")
        if optimizer is not None:
            unwrap_optimizer(optimizer)  # a bad optimizer fails here, before anything changes
        changed = [name for name in names if name not in self._frozen]
        changes = []
        for name in names:  # already frozen ones too: they must not stay in an optimizer
            for param in self._factors(name):
                param.requires_grad_(False)
                param.grad = None
                changes.append(ParamChange(param, None, "freeze"))
        self._frozen.update(changed)
        if changed:
            self._last_activations = None  # what autograd saves changed
        if optimizer is not None:
            apply_param_changes(optimizer, changes)
        return changed

    def thaw(self, targets: int | str | list[int] | list[str],
             optimizer: torch.optim.Optimizer | None = None) -> list[str]:
        """Train frozen modules again: their factors require grad and enter ``optimizer`` with empty state.

        Takes the same ``targets`` as :meth:`freeze`; modules that are not frozen are left alone.

        Returns:
            Names of the modules that were frozen before, in model order.

        Raises:
            RankedLoRAError: unknown module or group, or a named module at rank 0; nothing is changed.
        """
        names = self._freeze_targets(targets, "thaw")
        if optimizer is not None:
            unwrap_optimizer(optimizer)
        changed = [name for name in names if name in self._frozen]
        changes = []
        for name in changed:
            for param in self._factors(name):
                param.requires_grad_(True)
                changes.append(ParamChange(None, param, "add"))
        self._frozen.difference_update(changed)
        if changed:
            self._last_activations = None
            if optimizer is not None:
                apply_param_changes(optimizer, changes)
        return changed

    def frozen_factors(self) -> list[torch.Tensor]:
        """The LoRA factors of the frozen modules: state to save beside the trainable parameters."""
        return [param for name in self._ranks if name in self._frozen for param in self._factors(name)]

    def _factors(self, name: str) -> list[torch.Tensor]:
        return [linear.weight for linear in self._factor_linears(self._live_layer(name))]

    def _freeze_targets(self, targets, action: str) -> list[str]:
        """Module names of ``targets`` (see :meth:`freeze`) in model order; raises before any change."""
        items = list(targets) if isinstance(targets, (list, tuple)) else [targets]
        names: set[str] = set()
        for item in items:
            if isinstance(item, str):
                if item not in self._ranks:
                    raise RankedLoRAError(f"Unknown LoRA module '{item}'. Known modules are the keys of .ranks, "
                                          f"e.g. {next(iter(self._ranks))!r}; or pass a group index.")
                if self._ranks[item] == 0:
                    fix = "grow it with resize() first" if action == "freeze" else "grow it with resize() to train it"
                    raise RankedLoRAError(f"'{item}' is at rank 0, so there is nothing to {action}: it has no adapter; "
                                          f"{fix}.")
                names.add(item)
            elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
                self._check_group(int(item))
                names.update(n for n in self.group_modules(int(item)) if self._ranks[n] > 0)
            else:
                raise RankedLoRAError(f"Cannot {action} {item!r}: pass a group index (int), a module name (str), "
                                      "or a list of either.")
        return [name for name in self._ranks if name in names]

    def _restore(self, name: str, rank: int) -> list[ParamChange]:
        parent, child = _parent_of(self._root, name)
        target = getattr(parent, child)
        config = copy.deepcopy(self._config)
        config.r = rank
        # peft annotates lora_alpha as int, but its layers take any float (the module's own alpha is kept exactly).
        config.lora_alpha = self._alphas[name]  # type: ignore[assignment]
        config.rank_pattern, config.alpha_pattern, config.exclude_modules = {}, {}, None
        tuner = self.model.base_model
        if not isinstance(tuner, LoraModel):
            raise RankedLoRAError(f"Adapter '{self.adapter_name}' is not served by peft's LoraModel.")
        tuner._create_and_replace(config, self.adapter_name, target, child, parent, current_key=name)
        lin_A, lin_B = self._factor_linears(self._live_layer(name))
        lin_A.requires_grad_(True)
        lin_B.requires_grad_(True)
        return [ParamChange(None, lin_A.weight, "add"), ParamChange(None, lin_B.weight, "add")]

    def _sync_config(self) -> None:
        """Make PEFT's config describe the live model: explicit targets, per-module ranks, detached modules."""
        config = self._config
        active = {name: r for name, r in self._ranks.items() if r > 0}
        config.target_modules = sorted(self._ranks)
        config.exclude_modules = sorted(name for name, r in self._ranks.items() if r == 0) or None
        if active:
            config.r = max(set(active.values()), key=list(active.values()).count)
        config.rank_pattern = {name: r for name, r in active.items() if r != config.r}

    def _check_group(self, group: int) -> None:
        if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group < self.num_groups:
            raise RankedLoRAError(f"Group index {group!r} is out of range: there are {self.num_groups} groups "
                                  f"(0..{self.num_groups - 1}).")

    # ------------------------------------------------------------------ memory
    @property
    def activations_measured(self) -> bool:
        """Whether a saved-activation figure for the current ranks exists (resizes invalidate it)."""
        return self._last_activations is not None

    def forget_activations(self) -> None:
        """Drop the measured saved-activation figure (after anything that changes what autograd saves)."""
        self._last_activations = None

    def record_activations(self, nbytes: int) -> None:
        """Set the saved-activation figure of the current ranks from an earlier measurement.

        For callers that measure on one fixed batch and cache the figures
        (:meth:`~rankrl.signals.MemoryBudget.measure_kept_batch`): what autograd saves depends only on
        tensor shapes and on which parameters train, so the same ranks on the same batch save the same bytes.
        """
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}.")
        self._last_activations = int(nbytes)

    @contextmanager
    def unobserved(self) -> Iterator[None]:
        """Within the block, forward passes are not signal samples (:attr:`measuring` is set)."""
        previous, self.measuring = self.measuring, True
        try:
            yield
        finally:
            self.measuring = previous

    @contextmanager
    def measure_activations(self) -> Iterator[SavedActivationMeter]:
        """Count the bytes autograd saves inside the block (wrap a real training forward pass).

        The figure is kept and reported by :meth:`memory` until the next measurement.
        """
        meter = SavedActivationMeter(exclude=[*self.model.parameters(), *self.model.buffers()])
        with meter:
            yield meter
        self._last_activations = meter.bytes

    def measure_step(self, batch: dict) -> tuple[int, int]:
        """Run one forward and backward on ``batch`` without disturbing training; return (activation, grad) bytes.

        Gradients already held are put back afterwards and the RNG state is restored, so training
        continues exactly as if this had not run.
        """
        params = list(self.trainable_parameters())
        held = [p.grad for p in params]
        for p in params:
            p.grad = None
        was_training = self.model.training
        self.model.train()
        device = params[0].device if params else torch.device("cpu")
        try:
            rng_devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=rng_devices), self.measure_activations() as meter:
                outputs = self.model(**batch)
            if outputs.loss is None:
                raise RankedLoRAError("measure_step needs a batch with labels so that the model returns a loss.")
            outputs.loss.backward()
            grads = gradient_bytes(self.model, self.parameters())
        finally:
            for p, g in zip(params, held, strict=True):
                p.grad = g
            self.model.train(was_training)
        return meter.bytes, grads

    def memory(self, optimizer: torch.optim.Optimizer | None = None, batch: dict | None = None) -> MemoryReport:
        """Measured training memory in bytes.

        Args:
            optimizer: Counts its state tensors when given.
            batch: When given, activations and gradients are measured by a real forward/backward pass on it
                (:meth:`measure_step`); otherwise activations are those of the last
                :meth:`measure_activations` block (0 if none) and gradients those held now.
        """
        if self._buffer_bytes is None:
            self._buffer_bytes = sum(buffer.nbytes for buffer in self.model.buffers())
        params = self.parameters()
        trainable, frozen, count = parameter_bytes(self.model, params, self._buffer_bytes)
        frozen_adapter = sum(p.nbytes for name in self._frozen for p in self._factors(name))
        if batch is not None:
            activations, grads = self.measure_step(batch)
        else:
            activations, grads = (self._last_activations or 0), gradient_bytes(self.model, params)
        device = next(self.model.parameters()).device
        return MemoryReport(
            trainable_parameters=trainable,
            frozen_parameters=frozen - frozen_adapter,
            frozen_adapter=frozen_adapter,
            gradients=grads,
            optimizer_state=optimizer_state_bytes(optimizer),
            activations=activations,
            trainable_count=count,
            activations_measured=self._last_activations is not None,
            **device_figures(device),
        )

    # ------------------------------------------------------------------ export
    def save_pretrained(self, directory: str | Path, **kwargs) -> Path:
        """Write a standard PEFT adapter (``adapter_config.json`` with ``rank_pattern``) to ``directory``."""
        if not any(self._ranks.values()):
            raise RankedLoRAError(
                "Every module is at rank 0, so there is no LoRA adapter to save: vanilla PEFT cannot load an adapter "
                "that targets nothing. Grow at least one module before saving."
            )
        self._sync_config()
        directory = Path(directory)
        self.model.save_pretrained(str(directory), **kwargs)
        return directory

    def __repr__(self) -> str:
        frozen = f", frozen_groups={self.frozen_groups}" if self._frozen else ""
        return (f"RankedLoRA(modules={len(self._ranks)}, groups={self.num_groups}, "
                f"group_ranks={self.group_ranks}{frozen})")


# ---------------------------------------------------------------------- helpers
def _check_supported(config: LoraConfig) -> None:
    for key, why in _UNSUPPORTED_OPTIONS.items():
        if getattr(config, key, False):
            raise RankedLoRAError(f"{key}=True is not supported by RankedLoRA: {why}.")


def _resolve_targets(model, names, target_modules, default_finder) -> list[str]:
    if target_modules is None:
        targets = default_finder(model)
        if not targets:
            raise RankedLoRAError("Found no linear layers inside numbered transformer blocks; "
                                  "pass target_modules explicitly.")
        return targets
    probe = LoraConfig(target_modules=target_modules)
    from peft.tuners.tuners_utils import check_target_module_exists

    matched = [name for name in names if name and check_target_module_exists(probe, name)]
    if isinstance(target_modules, str):
        missing = [] if matched else [target_modules]
    else:
        missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in matched)]
    if missing:
        raise RankedLoRAError(
            f"target_modules {missing} match no module of {type(model).__name__}. "
            f"Module names look like {[n for n in names if n][:3]}...; use names or suffixes of those."
        )
    return matched


def _excluded(probe: LoraConfig, name: str) -> bool:
    from peft.tuners.tuners_utils import check_target_module_exists

    return not check_target_module_exists(probe, name)


def _has_module(root: nn.Module, name: str) -> bool:
    try:
        root.get_submodule(name)
    except AttributeError:
        return False
    return True


def _pattern_value(pattern: dict, name: str, default):
    from peft.utils.other import get_pattern_key

    return pattern.get(get_pattern_key(list(pattern), name), default)


def _parent_of(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (root.get_submodule(parent_name) if parent_name else root), child


def _linear_from(weight: torch.Tensor, like: torch.Tensor) -> nn.Linear:
    """An ``nn.Linear`` without bias holding ``weight`` (a new Parameter on ``like``'s device and dtype)."""
    out_features, in_features = weight.shape
    layer = nn.Linear(in_features, out_features, bias=False, device="meta")
    layer.weight = nn.Parameter(weight.to(device=like.device, dtype=like.dtype).contiguous(), requires_grad=True)
    return layer


def _init_like_peft(rows: torch.Tensor, init_lora_weights, rank: int) -> None:
    """Initialise new rows of A as PEFT's ``reset_lora_parameters`` does for the whole of A."""
    if init_lora_weights == "gaussian":
        nn.init.normal_(rows, std=1 / rank)
    else:
        nn.init.kaiming_uniform_(rows, a=math.sqrt(5))
