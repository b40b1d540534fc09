"""Property tests of the rank algebra on thin factors (grow exactness, Eckart-Young optimality)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rankrl.lora.factors import grow_factors, lora_scaling, shrink_factors, singular_values

shapes = st.tuples(st.integers(1, 24), st.integers(1, 24), st.integers(1, 10))


def _factors(d_in: int, d_out: int, rank: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rank, d_in, generator=generator), torch.randn(d_out, rank, generator=generator)


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(1, 8), st.booleans(), st.integers(0, 1000))
def test_grow_keeps_product_exactly(shape, extra, rslora, seed):
    d_in, d_out, rank = shape
    A, B = _factors(d_in, d_out, rank, seed)
    s_old, s_new = lora_scaling(8, rank, rslora), lora_scaling(8, rank + extra, rslora)
    new_rows = torch.randn(extra, d_in)
    A2, B2 = grow_factors(A, B, rank + extra, s_old, s_new, new_rows)
    assert A2.shape == (rank + extra, d_in) and B2.shape == (d_out, rank + extra)
    torch.testing.assert_close(s_new * B2 @ A2, s_old * B @ A, rtol=1e-5, atol=1e-5)
    assert torch.equal(A2[rank:], new_rows) and not B2[:, rank:].any()


@settings(max_examples=60, deadline=None)
@given(shapes, st.integers(1, 10), st.integers(0, 1000))
def test_shrink_is_the_best_low_rank_approximation(shape, new_rank, seed):
    d_in, d_out, rank = shape
    new_rank = min(new_rank, rank)
    A, B = _factors(d_in, d_out, rank, seed)
    s_old, s_new = lora_scaling(16, rank, False), lora_scaling(16, new_rank, False)
    A2, B2 = shrink_factors(A, B, new_rank, s_old, s_new)
    assert A2.shape == (new_rank, d_in) and B2.shape == (d_out, new_rank)
    full = (s_old * B @ A).double()
    sigma = torch.linalg.svdvals(full)
    # Eckart-Young: the error of the best rank-k approximation is the norm of the discarded singular values.
    expected_error = sigma[new_rank:].square().sum().sqrt()
    error = torch.linalg.matrix_norm(full - (s_new * B2 @ A2).double())
    assert abs(error - expected_error) <= 1e-4 * max(1.0, sigma[0].item())
    kept = torch.linalg.svdvals((s_new * B2 @ A2).double())[:new_rank]
    torch.testing.assert_close(kept, sigma[:new_rank], rtol=1e-4, atol=1e-4)


def test_shrink_to_same_rank_is_exact_and_keeps_the_scale_of_A():
    A, B = _factors(12, 7, 5, seed=3)
    A2, B2 = shrink_factors(A, B, 5, 2.0, 2.0)
    torch.testing.assert_close(B2 @ A2, B @ A, rtol=1e-5, atol=1e-5)
    rms = A.square().sum(dim=1).mean().sqrt()
    torch.testing.assert_close(A2.norm(dim=1), torch.full((5,), rms.item()), rtol=1e-5, atol=1e-5)


def test_shrinking_a_fresh_adapter_leaves_it_trainable():
    """A fresh adapter has B == 0: the shrunk pair must be LoRA's init form (A live, B zero), not all zeros."""
    A = torch.randn(8, 20)
    B = torch.zeros(6, 8)
    A2, B2 = shrink_factors(A, B, 4, 2.0, 4.0)
    assert torch.count_nonzero(B2) == 0
    assert (A2.norm(dim=1) > 0.1 * A.norm(dim=1).mean()).all()
    # B's gradient is (dL/dY) x^T A'^T: non-zero as long as A' is, so the adapter learns again.
    x, grad_out = torch.randn(3, 20), torch.randn(3, 6)
    assert torch.count_nonzero(grad_out.T @ (x @ A2.T)) > 0


def test_shrink_never_forms_the_full_product(monkeypatch):
    calls = []
    real_svd = torch.linalg.svd

    def spy(matrix, *args, **kwargs):
        calls.append(tuple(matrix.shape))
        return real_svd(matrix, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", spy)
    A, B = _factors(300, 200, 6, seed=0)
    shrink_factors(A, B, 2, 1.0, 1.0)
    assert calls == [(6, 6)]


def test_singular_values_of_known_rank():
    A, B = _factors(20, 16, 6, seed=1)
    B[:, 3:] = 0
    sigma = singular_values(A, B, 1.5)
    torch.testing.assert_close(sigma, torch.linalg.svdvals((1.5 * B @ A).double())[:6], rtol=1e-6, atol=1e-6)
    assert (sigma > 1e-9).sum() == 3


def test_invalid_ranks_are_refused():
    A, B = _factors(4, 4, 3, seed=0)
    for bad in (0, 4):
        try:
            shrink_factors(A, B, bad, 1.0, 1.0)
        except ValueError:
            continue
        raise AssertionError(f"shrink to {bad} was accepted")
    try:
        lora_scaling(8, 0, False)
    except ValueError:
        return
    raise AssertionError("scaling at rank 0 was accepted")
