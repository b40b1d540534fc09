"""Input-feature variance of each LoRA-targeted module, sampled through forward hooks.

For a module with input ``x`` of shape ``(..., d_in)`` the sample is the mean over the ``d_in`` features of
each feature's (population) variance across all tokens of the batch::

    v = mean_j Var_t(x[t, j])

Padding tokens are left out when the model was called with an ``attention_mask`` whose shape matches the
input's leading dimensions (captured by a pre-hook on the PEFT ``LoraModel``). Each module keeps a
bias-corrected EMA of its samples.

The hooks are forward *pre*-hooks on the module's **base layer** (the frozen linear), which no resize
replaces: at rank 0 ``RankedLoRA`` puts that very layer back in the model, and regrowth wraps it again. So
the variance stays measurable at rank 0, a useful signal for deciding to regrow. :meth:`sync` re-checks by
name and moves a hook if a base layer ever changes. Only every ``every``-th call of a module computes
anything (a ``reshape``, a masked select and a ``var`` under ``no_grad``); the other calls return at once.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from rankrl.lora import RankedLoRA
from rankrl.signals._modules import base_layer, module_slots


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
        self._ema: dict[str, torch.Tensor] = {}
        self.samples = dict.fromkeys(self.names, 0)
        self._hooked: dict[str, tuple[nn.Module, RemovableHandle]] = {}
        self._root_handles: list[RemovableHandle] = []
        self._mask: torch.Tensor | None = None
        self.max_tokens = max_tokens
        self._shared: dict[tuple, torch.Tensor] = {}  # per forward pass: input tensor -> its variance
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

    @property
    def hooks_installed(self) -> int:
        """Number of hooks currently installed (module hooks plus the two mask hooks)."""
        return len(self._hooked) + len(self._root_handles)

    def __enter__(self) -> InputVarianceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _capture_mask(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask") if self.mask_padding else None
        self._mask = mask if torch.is_tensor(mask) and mask.dim() == 2 else None

    def _clear_mask(self, module: nn.Module, args: tuple, output) -> None:
        self._mask = None
        self._shared.clear()

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            count = self._calls[name]
            self._calls[name] = count + 1
            if count % self.every or not args or not torch.is_tensor(args[0]):
                return
            self._sample(name, args[0])

        return hook

    # ------------------------------------------------------------------ sampling
    def _sample(self, name: str, x: torch.Tensor) -> None:
        key = (x.data_ptr(), tuple(x.shape))
        value = self._shared.get(key)  # query/key/value projections read the very same tensor
        if value is None:
            value = self._variance(x)
            if value is None:
                return
            self._shared[key] = value
        with torch.no_grad():
            ema = self._ema.get(name)
            self._ema[name] = value * (1.0 - self.beta) if ema is None else ema * self.beta + value * (1.0 - self.beta)
        self.samples[name] += 1

    def _variance(self, x: torch.Tensor) -> torch.Tensor | None:
        """Mean per-feature variance over (non-padding) tokens, from at most ``max_tokens`` evenly spaced rows."""
        with torch.no_grad():
            x = x.detach()
            flat = x.reshape(-1, x.shape[-1])
            mask = self._mask
            if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
                flat = flat[mask.reshape(-1).to(device=flat.device) != 0]
            if flat.shape[0] > self.max_tokens:
                flat = flat[:: -(-flat.shape[0] // self.max_tokens)]
            if flat.shape[0] < 2:
                return None
            return flat.float().var(dim=0, unbiased=False).mean()

    def variances(self) -> dict[str, float]:
        """Module name -> bias-corrected EMA of its input-feature variance (0 before its first sample)."""
        out = {}
        for name in self.names:
            n = self.samples[name]
            out[name] = float(self._ema[name]) / (1.0 - self.beta**n) if n else 0.0
        return out

    def reset(self) -> None:
        """Forget all samples (hooks stay installed)."""
        self._ema.clear()
        self.samples = dict.fromkeys(self.names, 0)
        self._calls = dict.fromkeys(self.names, 0)
