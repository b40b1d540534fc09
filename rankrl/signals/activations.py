"""Input-feature variance of each LoRA-targeted module, sampled through forward hooks.

For a module with input ``x`` of shape ``(..., d_in)`` the sample is the mean over the ``d_in`` features of
each feature's (population) variance across all tokens of the batch::

    v = mean_j Var_t(x[t, j])

Padding tokens are left out when the model was called with an ``attention_mask`` whose shape matches the
input's leading dimensions (captured by a pre-hook on the PEFT ``LoraModel``). Each module keeps a
bias-corrected EMA of its samples; samples are queued as tensors and folded into the EMAs when they are
read (:meth:`InputVarianceTracker.variances`), with one host transfer, so the forward pass never waits.

The hooks are forward *pre*-hooks on the module's **base layer** (the frozen linear), which no resize
replaces: at rank 0 ``RankedLoRA`` puts that very layer back in the model, and regrowth wraps it again. So
the variance stays measurable at rank 0, a useful signal for deciding to regrow. :meth:`sync` re-checks by
name and moves a hook if a base layer ever changes. Only every ``every``-th call of a module computes
anything (a row subsample of at most ``max_tokens`` non-padding tokens and two-pass moments under
``no_grad``); the other calls return at once.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from rankrl.lora import RankedLoRA
from rankrl.lora.slots import base_layer, module_slots

_MAX_PENDING = 1024
"""Queued samples that force a fold (bounds the queue when :meth:`InputVarianceTracker.variances` is rare)."""


class InputVarianceTracker:
    """EMA of the input-feature variance of every targeted module, sampled every ``every`` calls.

    Use it as a context manager or call :meth:`close` to remove its hooks.

    Args:
        rl: The model whose modules are tracked.
        every: Sample on the 1st, ``every+1``-th, ... call of each module.
        beta: EMA coefficient over samples.
        mask_padding: Leave out tokens whose ``attention_mask`` is 0.
        max_tokens: Estimate from at most this many evenly spaced token rows (the estimate needs a few
            hundred; a full 16 x 64 batch costs 4x more for no visible gain). Modules that read the same
            input tensor in one forward pass (query, key, value) share one computation.
    """

    def __init__(self, rl: RankedLoRA, every: int = 10, beta: float = 0.9, mask_padding: bool = True,
                 max_tokens: int = 512) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}.")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}.")
        self.rl = rl
        self.every = every
        self.beta = beta
        self.mask_padding = mask_padding
        self.names = list(rl.ranks)
        self._slots = module_slots(rl)
        self._calls = dict.fromkeys(self.names, 0)
        self._ema: dict[str, float] = {}
        self._pending: list[tuple[str, torch.Tensor]] = []  # samples not yet folded into the EMAs
        self.samples = dict.fromkeys(self.names, 0)
        self._hooked: dict[str, tuple[nn.Module, RemovableHandle]] = {}
        self._root_handles: list[RemovableHandle] = []
        self._mask: torch.Tensor | None = None
        self.max_tokens = max_tokens
        # Per forward pass of the model: id of an input tensor -> (weak reference to it, its variance).
        self._shared: dict[int, tuple[weakref.ref, torch.Tensor]] = {}
        self._in_pass = False
        self._rows_cache: tuple[torch.Tensor, torch.Tensor | None] | None = None  # per forward pass: mask -> rows
        self.open()

    # ------------------------------------------------------------------ hooks
    def open(self) -> None:
        """Install the hooks (done by the constructor; call again after :meth:`close` to resume)."""
        if not self._root_handles:
            tuner = self.rl.model.base_model
            self._root_handles = [
                tuner.register_forward_pre_hook(self._capture_mask, with_kwargs=True),
                tuner.register_forward_hook(self._clear_mask),
            ]
        self.sync()

    def sync(self) -> bool:
        """Make sure each module's current base layer carries the hook; return whether any hook moved."""
        moved = False
        for slot in self._slots:
            base = base_layer(slot.current())
            hooked = self._hooked.get(slot.name)
            if hooked is not None and hooked[0] is base:
                continue
            if hooked is not None:
                hooked[1].remove()
            handle = base.register_forward_pre_hook(self._make_hook(slot.name))
            self._hooked[slot.name] = (base, handle)
            moved = True
        return moved

    def close(self) -> None:
        """Remove every hook this tracker installed (its statistics are kept)."""
        for _, handle in self._hooked.values():
            handle.remove()
        self._hooked.clear()
        for handle in self._root_handles:
            handle.remove()
        self._root_handles = []
        self._mask = None
        self._rows_cache = None
        self._in_pass = False
        self._shared.clear()

    def due(self, names: list[str]) -> bool:
        """Whether the next pass samples any of ``names`` (one that skips them must not happen then)."""
        return any(self._calls[name] % self.every == 0 for name in names if name in self._hooked)

    def skipped(self, names: list[str]) -> None:
        """Count a pass that did not run ``names`` (their input was cached) as a call without a sample.

        :meth:`due` said none of them samples on this call, so the statistics are those of the full pass.
        """
        for name in names:
            if name in self._hooked:
                self._calls[name] += 1

    @property
    def hooks_installed(self) -> int:
        """Number of hooks currently installed (module hooks plus the two mask hooks)."""
        return len(self._hooked) + len(self._root_handles)

    def __enter__(self) -> InputVarianceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _capture_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._in_pass = True
        mask = kwargs.get("attention_mask") if self.mask_padding else None
        self._mask = mask if torch.is_tensor(mask) and mask.dim() == 2 else None

    def _clear_mask(self, module: nn.Module, args: tuple, output) -> None:
        self._mask = None
        self._rows_cache = None
        self._in_pass = False
        if self._shared:
            self._shared.clear()

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            if self.rl.measuring:
                return
            count = self._calls[name]
            self._calls[name] = count + 1
            if count % self.every or not args or not torch.is_tensor(args[0]):
                return
            self._sample(name, args[0])

        return hook

    # ------------------------------------------------------------------ sampling
    def _sample(self, name: str, x: torch.Tensor) -> None:
        # Query, key and value read the very same tensor object in one pass: compute once. The weak reference
        # tells that object from a later one at the same id (or address) once the first has been freed.
        shared = self._shared.get(id(x)) if self._in_pass else None
        value = shared[1] if shared is not None and shared[0]() is x else None
        if value is None:
            value = self._variance(x)
            if value is None:
                return
            if self._in_pass:
                self._shared[id(x)] = (weakref.ref(x), value)
        self._pending.append((name, value))  # folded on read: no host transfer during the forward pass
        self.samples[name] += 1
        if len(self._pending) >= _MAX_PENDING:
            self._fold()

    def _fold(self) -> None:
        """Fold the queued samples into the EMAs, in the order they were taken (one host transfer)."""
        if not self._pending:
            return
        tensors = [value for _, value in self._pending]
        one_device = len({t.device for t in tensors}) == 1
        values = torch.stack(tensors).tolist() if one_device else [float(t) for t in tensors]
        beta = self.beta
        for (name, _), value in zip(self._pending, values, strict=True):
            ema = self._ema.get(name)
            self._ema[name] = value * (1.0 - beta) if ema is None else ema * beta + value * (1.0 - beta)
        self._pending = []

    def _variance(self, x: torch.Tensor) -> torch.Tensor | None:
        """Mean per-feature variance over (non-padding) tokens, from at most ``max_tokens`` evenly spaced rows.

        Two-pass (centred) moments in float32: ``mean((x - mean_t x)^2)`` over rows and features is the mean
        of the per-feature population variances, and costs a fraction of ``var(dim=0)``'s Welford kernel.
        """
        with torch.no_grad():
            x = x.detach()
            flat = x.reshape(-1, x.shape[-1])
            mask = self._mask
            if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
                rows = self._rows(mask, flat.shape[0])
                if rows is not None:
                    flat = flat.index_select(0, rows.to(device=flat.device))
                elif flat.shape[0] > self.max_tokens:
                    flat = flat[:: -(-flat.shape[0] // self.max_tokens)]
            elif flat.shape[0] > self.max_tokens:
                flat = flat[:: -(-flat.shape[0] // self.max_tokens)]
            if flat.shape[0] < 2:
                return None
            flat = flat.float()
            return (flat - flat.mean(dim=0)).square().mean()

    def _rows(self, mask: torch.Tensor, count: int) -> torch.Tensor | None:
        """Evenly spaced non-padding row indices (at most ``max_tokens``), ``None`` when there is no padding.

        Computed once per forward pass: every module of the pass shares the mask.
        """
        cached = self._rows_cache
        if cached is not None and cached[0] is mask:
            return cached[1]
        keep = mask.reshape(-1) != 0
        if bool(keep.all()):
            rows = None
        else:
            rows = keep.nonzero().view(-1)
            if rows.numel() > self.max_tokens:
                rows = rows[:: -(-rows.numel() // self.max_tokens)]
        self._rows_cache = (mask, rows)
        return rows

    def variances(self) -> dict[str, float]:
        """Module name -> bias-corrected EMA of its input-feature variance (0 before its first sample)."""
        self._fold()
        out = {}
        for name in self.names:
            n = self.samples[name]
            out[name] = self._ema[name] / (1.0 - self.beta**n) if n else 0.0
        return out

    def state_dict(self) -> dict:
        """EMAs, sample counts and per-module call counters (JSON-ready; the sampling phase is restored too)."""
        self._fold()
        return {"names": self.names, "ema": dict(self._ema), "samples": dict(self.samples),
                "calls": dict(self._calls)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (hooks stay as they are).

        Raises:
            ValueError: the state is of another model.
        """
        if list(state["names"]) != self.names:
            raise ValueError("The saved input-variance state is of another model (its modules differ).")
        self._pending = []
        self._ema = {name: float(value) for name, value in state["ema"].items()}
        self.samples = {name: int(state["samples"][name]) for name in self.names}
        self._calls = {name: int(state["calls"][name]) for name in self.names}

    def reset(self) -> None:
        """Forget all samples (hooks stay installed)."""
        self._ema.clear()
        self._pending = []
        self.samples = dict.fromkeys(self.names, 0)
        self._calls = dict.fromkeys(self.names, 0)
