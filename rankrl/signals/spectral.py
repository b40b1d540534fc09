"""Spectral complexity of each module's current LoRA update ``scaling * B @ A``, computed on demand.

The singular values are computed as in :func:`rankrl.lora.factors.singular_values` (QR of the thin factors
and an SVD of the ``r x r`` core; the ``d_out x d_in`` product is never formed), batched over modules of
equal shapes. From ``sigma`` (descending):

* ``numerical_rank``: number of ``sigma_i > tol * sigma_max`` with ``tol = max(d_in, d_out) * eps`` of the
  factors' dtype (NumPy's ``matrix_rank`` rule). An update of exact rank ``k`` scores exactly ``k``.
* ``effective_rank``: ``exp(H(p))`` with ``p_i = sigma_i / sum(sigma)`` (Roy & Vetterli, 2007); continuous,
  equal to ``k`` when ``k`` singular values are equal and the others 0.
* ``stable_rank``: ``sum(sigma^2) / sigma_max^2``.
* ``rank_utilization``: ``effective_rank / r``, how much of the allocated rank the update uses.
* ``top{k}_energy``: ``sum(sigma_1..k ^ 2) / sum(sigma^2)``, the share of the update's energy in its top k
  directions.
* ``spectral_norm`` and ``nuclear_norm``: ``sigma_max`` and ``sum(sigma)``.
* ``complexity``: ``C = effective_rank * g`` with ``g`` the module's gradient norm (EMA from
  :class:`~rankrl.signals.importance.ImportanceTracker`): a module is complex when its update already
  spreads over many directions *and* is still being pushed. ``log_complexity = log(C + 1e-12)``;
  :func:`rank_from_complexity` turns it into a rank as ``alpha * log(C) + beta`` (the seed heuristic).

Singular values at or below the ``numerical_rank`` tolerance are float rounding, not directions: they are
set to 0 before every feature is computed. A zero update (rank 0, or a fresh module with ``B = 0``) has
every feature 0.
"""

from __future__ import annotations

import math

import torch

from rankrl.lora import RankedLoRA
from rankrl.signals._modules import lora_factors, module_slots

SPECTRAL_FEATURES = (
    "numerical_rank",
    "effective_rank",
    "stable_rank",
    "rank_utilization",
    "spectral_norm",
    "nuclear_norm",
    "complexity",
    "log_complexity",
)


def spectral_features(
    sigma: torch.Tensor,
    shape: tuple[int, int],
    dtype: torch.dtype = torch.float32,
    rank: int | None = None,
    top_k: tuple[int, ...] = (1,),
    rel_tol: float | None = None,
) -> dict[str, float]:
    """Named spectral features of one update from its singular values (see the module docstring).

    Args:
        sigma: Singular values, any order (non-negative).
        shape: ``(d_out, d_in)`` of the update, for the default tolerance.
        dtype: dtype of the factors, for the default tolerance.
        rank: Allocated LoRA rank (``rank_utilization``); defaults to ``len(sigma)``.
        top_k: The ``k`` of the ``top{k}_energy`` features.
        rel_tol: Relative threshold of ``numerical_rank``; default ``max(shape) * eps(dtype)``.
    """
    sigma = torch.sort(sigma.detach().double().clamp_min(0.0), descending=True).values
    rank = len(sigma) if rank is None else rank
    out = {name: 0.0 for name in SPECTRAL_FEATURES if "complexity" not in name}
    for k in top_k:
        out[f"top{k}_energy"] = 0.0
    if sigma.numel() == 0 or float(sigma[0]) == 0.0:
        return out
    tol = rel_tol if rel_tol is not None else max(shape) * torch.finfo(dtype).eps
    sigma_max = float(sigma[0])
    sigma = torch.where(sigma > tol * sigma_max, sigma, torch.zeros_like(sigma))  # rounding noise is not rank
    energy = sigma.square()
    total_energy = float(energy.sum())
    p = sigma / sigma.sum()
    p = p[p > 0]
    effective_rank = math.exp(float(-(p * p.log()).sum()))
    out["numerical_rank"] = float(int((sigma > 0).sum()))
    out["effective_rank"] = effective_rank
    out["stable_rank"] = total_energy / sigma_max**2
    out["rank_utilization"] = effective_rank / rank if rank else 0.0
    out["spectral_norm"] = sigma_max
    out["nuclear_norm"] = float(sigma.sum())
    cumulative = energy.cumsum(0)
    for k in top_k:
        out[f"top{k}_energy"] = float(cumulative[min(k, len(sigma)) - 1]) / total_energy
    return out


def complexity_score(effective_rank: float, grad_norm: float) -> float:
    """``C = effective_rank * grad_norm`` (0 when either is 0)."""
    return effective_rank * grad_norm


def rank_from_complexity(complexity: float, alpha: float, beta: float, min_rank: int = 0, max_rank: int = 64) -> int:
    """``round(alpha * log(C) + beta)`` clipped to ``[min_rank, max_rank]`` (``min_rank`` when ``C <= 0``)."""
    if complexity <= 0.0:
        return min_rank
    return int(min(max(round(alpha * math.log(complexity) + beta), min_rank), max_rank))


def batched_singular_values(lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: torch.Tensor) -> torch.Tensor:
    """Singular values of ``scaling[i] * B[i] @ A[i]`` for a batch of same-shaped factors, shape ``(n, r)``.

    The route of :func:`rankrl.lora.factors.singular_values` (reduced QR of both factors in float64, then
    the SVD of the ``r x r`` core), batched, so that a model's modules cost a few calls rather than three per
    module.
    """
    _, r_b = torch.linalg.qr(lora_B.detach().double(), mode="reduced")
    _, r_a = torch.linalg.qr(lora_A.detach().double().mT, mode="reduced")
    return torch.linalg.svdvals(scaling.double().view(-1, 1, 1) * (r_b @ r_a.mT))


def module_spectral_features(
    rl: RankedLoRA,
    grad_norms: dict[str, float] | None = None,
    top_k: tuple[int, ...] = (1,),
    rel_tol: float | None = None,
) -> dict[str, dict[str, float]]:
    """Spectral features of every module of ``rl`` (all 0 at rank 0), with complexity from ``grad_norms``.

    Modules whose factors have the same shapes are stacked and decomposed together
    (:func:`batched_singular_values`).

    Args:
        rl: The model.
        grad_norms: Module name -> gradient norm (e.g. ``ImportanceTracker`` features); missing means 0.
        top_k: The ``k`` of the ``top{k}_energy`` features.
        rel_tol: See :func:`spectral_features`.
    """
    grad_norms = grad_norms or {}
    adapter = rl.adapter_name
    buckets: dict[tuple, list[tuple[str, torch.Tensor, torch.Tensor, float]]] = {}
    out = {}
    for slot in module_slots(rl):
        module = slot.current()
        factors = lora_factors(module, adapter)
        if factors is None:
            out[slot.name] = spectral_features(torch.zeros(0), (1, 1), top_k=top_k)
            continue
        A, B = factors
        key = (tuple(A.shape), tuple(B.shape), A.dtype, A.device)
        buckets.setdefault(key, []).append((slot.name, A, B, module.scaling[adapter]))
    with torch.no_grad():
        for (shape_a, shape_b, dtype, _), items in buckets.items():
            sigmas = batched_singular_values(
                torch.stack([a for _, a, _, _ in items]),
                torch.stack([b for _, _, b, _ in items]),
                torch.tensor([s for _, _, _, s in items]),
            ).cpu()
            for (name, _, _, _), sigma in zip(items, sigmas, strict=True):
                out[name] = spectral_features(sigma, (shape_b[0], shape_a[1]), dtype, shape_a[0], top_k, rel_tol)
    result = {}
    for slot in module_slots(rl):
        features = out[slot.name]
        complexity = complexity_score(features["effective_rank"], grad_norms.get(slot.name, 0.0))
        features["complexity"] = complexity
        features["log_complexity"] = math.log(complexity + 1e-12)
        result[slot.name] = features
    return result
