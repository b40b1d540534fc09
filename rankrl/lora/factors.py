"""Rank changes of one LoRA update ``scaling * B @ A`` computed on the thin factors.

PEFT has no operation that changes the rank of a live adapter, so this module does the linear algebra:

* :func:`grow_factors` appends rank: new rows of ``A`` get a fresh initialisation, new columns of ``B`` are
  zero, and the ratio of old to new scaling is folded into the kept columns of ``B``. The product, and so
  the model's function, is unchanged up to float rounding.
* :func:`shrink_factors` keeps the best rank-r approximation of ``scaling * B @ A`` in Frobenius and
  spectral norm (Eckart-Young). It never forms the ``d_out x d_in`` product: it takes reduced QR
  factorisations of ``B`` and ``A^T`` and an SVD of the small ``r x r`` core, so its cost is
  ``O((d_in + d_out) r^2)`` rather than ``O(d_in d_out min(d_in, d_out))``.

The factors of a shrink are split the way LoRA itself is initialised: ``A`` gets orthogonal rows at the
root-mean-square row norm the old ``A`` had, and ``B`` carries the singular values. A balanced split
(``sqrt`` of the singular values in both) would look tidier but kills learning: a direction whose singular
value is zero (every direction of a fresh adapter, whose ``B`` is zero) would get zero in *both* factors,
and such a pair receives no gradient ever again.
"""

from __future__ import annotations

import math

import torch


def lora_scaling(lora_alpha: float, rank: int, use_rslora: bool) -> float:
    """PEFT's scaling of the update: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
    if rank <= 0:
        raise ValueError(f"LoRA scaling is undefined for rank {rank}.")
    return lora_alpha / math.sqrt(rank) if use_rslora else lora_alpha / rank


def grow_factors(
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    new_rank: int,
    old_scaling: float,
    new_scaling: float,
    new_rows_A: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raise the rank of ``(A, B)`` from ``r`` to ``new_rank`` without changing ``scaling * B @ A``.

    Args:
        lora_A: ``(r, d_in)`` down-projection.
        lora_B: ``(d_out, r)`` up-projection.
        new_rank: Target rank, at least ``r``.
        old_scaling: Scaling at rank ``r``.
        new_scaling: Scaling at ``new_rank``.
        new_rows_A: ``(new_rank - r, d_in)`` freshly initialised rows for ``A``.

    Returns:
        ``(A', B')`` with ``new_scaling * B' @ A' == old_scaling * B @ A``.
    """
    rank = lora_A.shape[0]
    if new_rank < rank:
        raise ValueError(f"grow_factors needs new_rank >= current rank ({rank}), got {new_rank}.")
    if new_rows_A.shape != (new_rank - rank, lora_A.shape[1]):
        raise ValueError(f"new_rows_A has shape {tuple(new_rows_A.shape)}, "
                         f"expected {(new_rank - rank, lora_A.shape[1])}.")
    zeros_B = lora_B.new_zeros(lora_B.shape[0], new_rank - rank)
    new_A = torch.cat([lora_A, new_rows_A.to(lora_A)], dim=0)
    new_B = torch.cat([lora_B * (old_scaling / new_scaling), zeros_B], dim=1)
    return new_A, new_B


def shrink_factors(
    lora_A: torch.Tensor,
    lora_B: torch.Tensor,
    new_rank: int,
    old_scaling: float,
    new_scaling: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``new_rank`` approximation of ``old_scaling * B @ A``, with ``A`` kept at its scale.

    The product ``M = s B A`` is rewritten through reduced QR, ``B = Q_B R_B`` and ``A^T = Q_A R_A``, as
    ``M = Q_B (s R_B R_A^T) Q_A^T``. The core ``C = s R_B R_A^T`` is at most ``r x r``; its SVD
    ``C = U S V^T`` gives the SVD of ``M`` with left vectors ``Q_B U`` and right vectors ``Q_A V``, so
    truncation to the top ``new_rank`` singular triplets is the Eckart-Young optimum. The work is done in
    float64 and cast back.

    The split keeps ``A`` trainable: ``A' = c V^T`` with ``c`` the RMS row norm of the old ``A`` and
    ``B' = U S / (c * new_scaling)``. Directions with zero singular value thus have ``B`` zero and ``A``
    non-zero, like a fresh LoRA initialisation, and keep learning.

    When ``new_rank`` exceeds the rank the thin factors can hold (``r > d_in`` or ``r > d_out``) the extra
    directions are zero in both factors.

    Returns:
        ``(A', B')`` of shapes ``(new_rank, d_in)`` and ``(d_out, new_rank)``.
    """
    rank = lora_A.shape[0]
    if not 0 < new_rank <= rank:
        raise ValueError(f"shrink_factors needs 0 < new_rank <= current rank ({rank}), got {new_rank}.")
    dtype = lora_A.dtype
    q_b, r_b = torch.linalg.qr(lora_B.double(), mode="reduced")
    q_a, r_a = torch.linalg.qr(lora_A.double().T, mode="reduced")
    core = old_scaling * (r_b @ r_a.T)
    u, s, vh = torch.linalg.svd(core, full_matrices=False)
    keep = min(new_rank, s.shape[0])
    row_scale = float(lora_A.double().square().sum(dim=1).mean().sqrt())
    if row_scale == 0.0:
        row_scale = 1.0
    new_B = lora_B.new_zeros(lora_B.shape[0], new_rank, dtype=torch.float64)
    new_A = lora_A.new_zeros(new_rank, lora_A.shape[1], dtype=torch.float64)
    new_B[:, :keep] = (q_b @ u[:, :keep]) * (s[:keep] / (row_scale * new_scaling))
    new_A[:keep] = row_scale * (vh[:keep] @ q_a.T)
    return new_A.to(dtype), new_B.to(dtype)


def singular_values(lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> torch.Tensor:
    """Singular values of ``scaling * B @ A`` (descending) through the same QR-then-small-SVD route."""
    _, r_b = torch.linalg.qr(lora_B.detach().double(), mode="reduced")
    _, r_a = torch.linalg.qr(lora_A.detach().double().T, mode="reduced")
    return torch.linalg.svdvals(scaling * (r_b @ r_a.T))
