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
from rankrl.lora.slots import ModuleSlot, lora_factors, module_slots

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
    sigma = sigma.detach().reshape(1, -1)
    return batched_spectral_features(sigma, shape, dtype, sigma.shape[1] if rank is None else rank, top_k, rel_tol)[0]


def batched_spectral_features(
    sigmas: torch.Tensor,
    shape: tuple[int, int],
    dtype: torch.dtype = torch.float32,
    rank: int | None = None,
    top_k: tuple[int, ...] = (1,),
    rel_tol: float | None = None,
) -> list[dict[str, float]]:
    """:func:`spectral_features` of a batch of updates of one shape, from their singular values ``(n, r)``.

    The features of all rows are computed with a handful of tensor operations and read back in one
    transfer (the per-module route costs a dozen small operations and host reads per module).
    """
    names = [name for name in SPECTRAL_FEATURES if "complexity" not in name]
    energy_names = [f"top{k}_energy" for k in top_k]
    n, r = sigmas.shape
    rank = r if rank is None else rank
    if r == 0:
        return [dict.fromkeys((*names, *energy_names), 0.0) for _ in range(n)]
    sigma = torch.sort(sigmas.detach().double().clamp_min(0.0), dim=1, descending=True).values
    tol = rel_tol if rel_tol is not None else max(shape) * torch.finfo(dtype).eps
    sigma_max = sigma[:, 0]
    sigma = torch.where(sigma > tol * sigma_max[:, None], sigma, torch.zeros_like(sigma))  # rounding is not rank
    live = sigma_max > 0  # a zero update scores 0 everywhere
    safe_max = torch.where(live, sigma_max, torch.ones_like(sigma_max))
    energy = sigma.square()
    cumulative = energy.cumsum(1)
    total_energy = torch.where(live, cumulative[:, -1], torch.ones_like(sigma_max))
    nuclear = sigma.sum(1)
    p = sigma / torch.where(live, nuclear, torch.ones_like(nuclear))[:, None]
    effective_rank = torch.exp(-torch.xlogy(p, p).sum(1))  # 0 * log 0 = 0
    columns = {
        "numerical_rank": (sigma > 0).sum(1).double(),
        "effective_rank": effective_rank,
        "stable_rank": cumulative[:, -1] / safe_max.square(),
        "rank_utilization": effective_rank / rank if rank else torch.zeros_like(sigma_max),
        "spectral_norm": sigma_max,
        "nuclear_norm": nuclear,
    }
    for k, name in zip(top_k, energy_names, strict=True):
        columns[name] = cumulative[:, min(k, r) - 1] / total_energy
    keys = [*names, *energy_names]
    table = torch.stack([columns[key] for key in keys], dim=1)
    table = torch.where(live[:, None], table, torch.zeros_like(table)).tolist()
    return [dict(zip(keys, row, strict=True)) for row in table]


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
    module. Only the triangular factors are formed (``mode="r"``), never the orthonormal ones.
    """
    r_b = torch.linalg.qr(lora_B.detach().double(), mode="r").R
    r_a = torch.linalg.qr(lora_A.detach().double().mT.contiguous(), mode="r").R
    return torch.linalg.svdvals(scaling.double().view(-1, 1, 1) * (r_b @ r_a.mT))


def module_spectral_features(
    rl: RankedLoRA,
    grad_norms: dict[str, float] | None = None,
    top_k: tuple[int, ...] = (1,),
    rel_tol: float | None = None,
    slots: list[ModuleSlot] | None = None,
) -> dict[str, dict[str, float]]:
    """Spectral features of every module of ``rl`` (all 0 at rank 0), with complexity from ``grad_norms``.

    Modules whose factors have the same shapes are stacked and decomposed together
    (:func:`batched_singular_values`, :func:`batched_spectral_features`).

    Args:
        rl: The model.
        grad_norms: Module name -> gradient norm (e.g. ``ImportanceTracker`` features); missing means 0.
        top_k: The ``k`` of the ``top{k}_energy`` features.
        rel_tol: See :func:`spectral_features`.
        slots: ``module_slots(rl)``, when the caller keeps them (saves the module look-ups).
    """
    grad_norms = grad_norms or {}
    slots = module_slots(rl) if slots is None else slots
    adapter = rl.adapter_name
    buckets: dict[tuple, list[tuple[str, torch.Tensor, torch.Tensor, float]]] = {}
    out = {}
    zero = None
    for slot in slots:
        module = slot.current()
        factors = lora_factors(module, adapter)
        if factors is None:
            if zero is None:
                zero = spectral_features(torch.zeros(0), (1, 1), top_k=top_k)
            out[slot.name] = dict(zero)
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
            rows = batched_spectral_features(sigmas, (shape_b[0], shape_a[1]), dtype, shape_a[0], top_k, rel_tol)
            for (name, _, _, _), features in zip(items, rows, strict=True):
                out[name] = features
    result = {}
    for slot in slots:
        features = out[slot.name]
        complexity = complexity_score(features["effective_rank"], grad_norms.get(slot.name, 0.0))
        features["complexity"] = complexity
        features["log_complexity"] = math.log(complexity + 1e-12)
        result[slot.name] = features
    return result
