"""Per-module importance of LoRA modules from their gradients: AdaLoRA sensitivity and gradient norm.

Call :meth:`ImportanceTracker.accumulate` after ``backward()`` and before ``zero_grad()`` (in a Hugging Face
``Trainer`` that is ``on_pre_optimizer_step``; at ``on_step_end`` the gradients are gone). Per element ``w``
of the factors ``A`` and ``B`` of every live module, as in AdaLoRA (Zhang et al., 2023)::

    I  = |w * g|                                   sensitivity of this step
    Ī  = beta1 * Ī + (1 - beta1) * I               smoothed sensitivity
    Ū  = beta2 * Ū + (1 - beta2) * |I - Ī|          uncertainty (uses the updated Ī, as AdaLoRA does)

and the module features, computed on read, are ``importance = sum(Ī * Ū)`` and ``sensitivity = sum(Ī)``
over its elements, plus ``grad_norm``, an EMA of ``sqrt(|g_A|^2 + |g_B|^2)``. With ``bias_correction``
(default) the EMAs are divided by ``1 - beta ** n`` (n = updates since the state was created), so that a
module whose state was just reset reads on the same scale as the others.

The work is a handful of ``torch._foreach_*`` calls over all factors at once under ``no_grad``; the state
costs two tensors per factor (2x the LoRA parameter bytes, see :meth:`ImportanceTracker.state_bytes`).

Resizes (state is keyed by module name and re-synced by parameter identity on every call):

* **grow** (the old ``A`` rows are found unchanged at the top of the new ``A``): the per-element state is
  carried, zero on the new rows of ``A`` and columns of ``B``. This is exact: ``|w * g|`` of a kept ``B``
  entry is unchanged by the scaling fold (``w`` scales by ``c``, ``g`` by ``1/c``), and new entries have
  ``I = 0`` until ``B`` moves off zero.
* **any other change of a live module** (shrink rotates the basis): per-element state is reset; the scalar
  gradient-norm EMA is carried.
* **rank 0**: the module has no factors, all its features are 0 and its state is dropped; regrowth starts
  afresh. Note that a fresh LoRA module (``B = 0``) has ``I = 0`` everywhere until its first optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rankrl.lora import RankedLoRA
from rankrl.lora.slots import ModuleSlot, lora_factors, module_slots


@dataclass
class _State:
    layer: torch.nn.Module
    A: torch.nn.Parameter
    B: torch.nn.Parameter
    ipt: list[torch.Tensor] = field(default_factory=list)  # Ī for A, B
    unc: list[torch.Tensor] = field(default_factory=list)  # Ū for A, B


class ImportanceTracker:
    """AdaLoRA sensitivity and gradient norm per LoRA module of a :class:`~rankrl.RankedLoRA`.

    Args:
        rl: The model whose modules are tracked (every module of ``rl.ranks``).
        beta1: EMA coefficient of the sensitivity.
        beta2: EMA coefficient of the uncertainty.
        grad_beta: EMA coefficient of the gradient norm.
        every: Update on every ``every``-th call of :meth:`accumulate` only (1 = every call).
        bias_correction: Divide EMAs by ``1 - beta ** n``.
    """

    def __init__(self, rl: RankedLoRA, beta1: float = 0.85, beta2: float = 0.85, grad_beta: float = 0.9,
                 every: int = 1, bias_correction: bool = True) -> None:
        for label, beta in (("beta1", beta1), ("beta2", beta2), ("grad_beta", grad_beta)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{label} must be in [0, 1), got {beta}.")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}.")
        self.rl = rl
        self.beta1, self.beta2, self.grad_beta = beta1, beta2, grad_beta
        self.every = every
        self.bias_correction = bias_correction
        self.names = list(rl.ranks)
        self._slots: list[ModuleSlot] = module_slots(rl)
        self._states: dict[str, _State] = {}
        self._grad_ema = [0.0] * len(self.names)
        self._grad_count = [0] * len(self.names)
        self._sens_count = [0] * len(self.names)
        self._calls = 0
        self.updates = 0
        self._live: list[int] = []
        self._flat_params: list[torch.Tensor] = []
        self._flat_ipt: list[torch.Tensor] = []
        self._flat_unc: list[torch.Tensor] = []
        self._pending_norms: list[torch.Tensor] = []
        self._seen: list[tuple] | None = None  # per slot, the objects the last full sync found (fast re-check)

    # ------------------------------------------------------------------ sync
    def sync(self) -> bool:
        """Match the state to the model's current factors; return whether anything changed."""
        if self._seen is not None and self._unchanged():
            return False
        changed = False
        adapter = self.rl.adapter_name
        for index, slot in enumerate(self._slots):
            module = slot.current()
            factors = lora_factors(module, adapter)
            state = self._states.get(slot.name)
            if factors is None:
                if state is not None:
                    self._flush_norms()
                    del self._states[slot.name]
                    self._grad_ema[index], self._grad_count[index], self._sens_count[index] = 0.0, 0, 0
                    changed = True
                continue
            A, B = factors
            if state is not None and state.A is A and state.B is B:
                continue
            self._flush_norms()
            if state is not None and state.layer is not module:  # detached and regrown since the last sync
                state = None
            self._states[slot.name] = self._new_state(index, module, state, A, B)
            changed = True
        if changed:
            self._rebuild()
        self._seen = [_installed(slot, adapter) for slot in self._slots]
        return changed

    def _unchanged(self) -> bool:
        """Whether every slot still holds the very objects of the last full sync (plain dict look-ups)."""
        adapter = self.rl.adapter_name
        for slot, seen in zip(self._slots, self._seen, strict=True):
            now = _installed(slot, adapter)
            if any(a is not b for a, b in zip(now, seen, strict=True)):
                return False
        return True

    def _new_state(self, index: int, layer: torch.nn.Module, old: _State | None, A: torch.nn.Parameter,
                   B: torch.nn.Parameter) -> _State:
        state = _State(layer, A, B)
        rank_old = old.A.shape[0] if old is not None else 0
        grown = (
            old is not None and A.shape[0] >= rank_old and A.shape[1] == old.A.shape[1]
            and B.shape[0] == old.B.shape[0] and torch.equal(A[:rank_old], old.A)
        )
        if grown:
            state.ipt = [_pad(old.ipt[0], A.shape, 0), _pad(old.ipt[1], B.shape, 1)]
            state.unc = [_pad(old.unc[0], A.shape, 0), _pad(old.unc[1], B.shape, 1)]
        else:
            state.ipt = [torch.zeros_like(A), torch.zeros_like(B)]
            state.unc = [torch.zeros_like(A), torch.zeros_like(B)]
            self._sens_count[index] = 0
            if old is None:  # new or regrown from rank 0
                self._grad_ema[index], self._grad_count[index] = 0.0, 0
        return state

    def _rebuild(self) -> None:
        self._live = [i for i, name in enumerate(self.names) if name in self._states]
        self._flat_params, self._flat_ipt, self._flat_unc = [], [], []
        for i in self._live:
            state = self._states[self.names[i]]
            self._flat_params += [state.A, state.B]
            self._flat_ipt += state.ipt
            self._flat_unc += state.unc

    # ------------------------------------------------------------------ accumulation
    def accumulate(self) -> bool:
        """Fold the gradients held now into the EMAs; call between ``backward()`` and ``zero_grad()``.

        Returns:
            Whether this call updated the state (``False`` on the calls skipped by ``every``).
        """
        self._calls += 1
        self.sync()  # also on skipped calls, so that a grow is still recognised before the optimizer moves A
        if (self._calls - 1) % self.every:
            return False
        if not self._flat_params:
            return True
        with torch.no_grad():
            params = self._flat_params
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            ipt = torch._foreach_mul(params, grads)
            torch._foreach_abs_(ipt)
            torch._foreach_lerp_(self._flat_ipt, ipt, 1.0 - self.beta1)
            torch._foreach_sub_(ipt, self._flat_ipt)
            torch._foreach_abs_(ipt)
            torch._foreach_lerp_(self._flat_unc, ipt, 1.0 - self.beta2)
            self._pending_norms.append(torch.stack(torch._foreach_norm(grads)).float())
        for i in self._live:
            self._sens_count[i] += 1
        self.updates += 1
        if len(self._pending_norms) >= 32:
            self._flush_norms()
        return True

    def _flush_norms(self) -> None:
        """Fold the queued per-step factor norms into the scalar gradient-norm EMAs (one host transfer)."""
        if not self._pending_norms:
            return
        rows = torch.stack(self._pending_norms).view(len(self._pending_norms), -1, 2).norm(dim=2).tolist()
        self._pending_norms = []
        beta = self.grad_beta
        for row in rows:
            for i, value in zip(self._live, row, strict=True):
                self._grad_ema[i] = beta * self._grad_ema[i] + (1.0 - beta) * value
                self._grad_count[i] += 1

    # ------------------------------------------------------------------ reading
    def _correction(self, beta: float, count: int) -> float:
        if count == 0:
            return 0.0
        return 1.0 / (1.0 - beta**count) if self.bias_correction else 1.0

    def module_features(self) -> dict[str, dict[str, float]]:
        """Module name -> ``{"importance", "sensitivity", "grad_norm"}``; all 0 for modules at rank 0."""
        self.sync()
        self._flush_norms()
        out = {name: {"importance": 0.0, "sensitivity": 0.0, "grad_norm": 0.0} for name in self.names}
        if self._flat_params:
            with torch.no_grad():
                products = torch._foreach_mul(self._flat_ipt, self._flat_unc)
                importance = torch.stack([t.sum() for t in products]).view(-1, 2).sum(dim=1).tolist()
                sensitivity = torch.stack([t.sum() for t in self._flat_ipt]).view(-1, 2).sum(dim=1).tolist()
            for i, imp, sens in zip(self._live, importance, sensitivity, strict=True):
                n = self._sens_count[i]
                c1, c2 = self._correction(self.beta1, n), self._correction(self.beta2, n)
                out[self.names[i]]["importance"] = float(imp) * c1 * c2
                out[self.names[i]]["sensitivity"] = float(sens) * c1
        for i in self._live:
            c = self._correction(self.grad_beta, self._grad_count[i])
            out[self.names[i]]["grad_norm"] = self._grad_ema[i] * c
        return out

    def state_bytes(self) -> int:
        """Bytes of the per-element EMA state (not counted by :meth:`RankedLoRA.memory`)."""
        return sum(t.nbytes for t in self._flat_ipt) + sum(t.nbytes for t in self._flat_unc)

    def reset(self) -> None:
        """Drop all accumulated state (the next :meth:`accumulate` starts from zero)."""
        self._states.clear()
        self._pending_norms = []
        self._grad_ema = [0.0] * len(self.names)
        self._grad_count = [0] * len(self.names)
        self._sens_count = [0] * len(self.names)
        self._seen = None
        self._rebuild()


def _installed(slot: ModuleSlot, adapter: str) -> tuple:
    """What a slot holds, to be compared by identity: the module, its adapter's linears and their weights."""
    module = slot.parent._modules[slot.child]
    children = module._modules
    lin_a = getattr(children.get("lora_A"), "_modules", {}).get(adapter)
    lin_b = getattr(children.get("lora_B"), "_modules", {}).get(adapter)
    return (module, lin_a, lin_b,
            lin_a._parameters.get("weight") if lin_a is not None else None,
            lin_b._parameters.get("weight") if lin_b is not None else None)


def _pad(state: torch.Tensor, shape: torch.Size, dim: int) -> torch.Tensor:
    """``state`` in the leading slice along ``dim`` of a zero tensor of ``shape``."""
    out = state.new_zeros(shape)
    index = [slice(None)] * out.dim()
    index[dim] = slice(0, state.shape[dim])
    out[tuple(index)] = state
    return out
