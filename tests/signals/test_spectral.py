import math

import pytest
import torch

from rankrl.signals import (
    ImportanceTracker,
    complexity_score,
    module_spectral_features,
    rank_from_complexity,
    spectral_features,
)

from .helpers import train_steps

NAME = "bert.encoder.layer.1.intermediate.dense"  # 128 -> 512


def set_factors(rl, name, A, B):
    layer = rl.lora_layer(name)
    with torch.no_grad():
        layer.lora_A[rl.adapter_name].weight.copy_(A)
        layer.lora_B[rl.adapter_name].weight.copy_(B)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_known_rank_k_update_scores_k(k):
    from .helpers import attach

    rl = attach(rank=8)
    gen = torch.Generator().manual_seed(k)
    layer = rl.lora_layer(NAME)
    d_out, d_in = layer.out_features, layer.in_features
    # Generic rank-k product: B = U M with U (d_out x k), M (k x r); A dense. Float32 rounding included.
    B = torch.randn(d_out, k, generator=gen) @ torch.randn(k, 8, generator=gen)
    A = torch.randn(8, d_in, generator=gen)
    set_factors(rl, NAME, A, B)
    features = module_spectral_features(rl)[NAME]
    assert features["numerical_rank"] == k
    assert 1.0 <= features["effective_rank"] <= k + 1e-9

    # Equal singular values: every rank notion equals k, the top singular value holds 1/k of the energy.
    q_out, _ = torch.linalg.qr(torch.randn(d_out, 8, generator=gen))
    q_in, _ = torch.linalg.qr(torch.randn(d_in, 8, generator=gen))
    B = torch.zeros(d_out, 8)
    B[:, :k] = q_out[:, :k]
    set_factors(rl, NAME, q_in.T, B)
    features = module_spectral_features(rl)[NAME]
    assert features["numerical_rank"] == k
    assert features["effective_rank"] == pytest.approx(k, rel=1e-6)
    assert features["stable_rank"] == pytest.approx(k, rel=1e-6)
    assert features["top1_energy"] == pytest.approx(1 / k, rel=1e-6)
    assert features["rank_utilization"] == pytest.approx(k / 8, rel=1e-6)
    assert features["spectral_norm"] == pytest.approx(rl.scaling(NAME), rel=1e-6)


def test_features_from_singular_values():
    sigma = torch.tensor([3.0, 4.0, 0.0])  # unsorted on purpose
    f = spectral_features(sigma, (10, 10), rank=4, top_k=(1, 2))
    assert f["numerical_rank"] == 2
    assert f["top1_energy"] == pytest.approx(16 / 25)
    assert f["top2_energy"] == pytest.approx(1.0)
    assert f["stable_rank"] == pytest.approx(25 / 16)
    p = torch.tensor([4 / 7, 3 / 7])
    assert f["effective_rank"] == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert f["rank_utilization"] == pytest.approx(f["effective_rank"] / 4)
    assert f["nuclear_norm"] == pytest.approx(7.0)


def test_zero_update_and_rank_zero_score_zero(rl, optimizer):
    features = module_spectral_features(rl)  # fresh LoRA: B = 0
    assert all(f["numerical_rank"] == 0 and f["effective_rank"] == 0 and f["complexity"] == 0
               for f in features.values())
    rl.set_group_ranks([0, 4], optimizer)
    train_steps(rl, optimizer, 2)
    features = module_spectral_features(rl)
    assert all(features[n]["effective_rank"] == 0.0 for n in rl.group_modules(0))
    assert all(features[n]["numerical_rank"] >= 1 for n in rl.group_modules(1))


def test_complexity_combines_effective_rank_and_gradient(rl, optimizer):
    tracker = ImportanceTracker(rl)
    train_steps(rl, optimizer, 3, tracker)
    grads = {n: f["grad_norm"] for n, f in tracker.module_features().items()}
    features = module_spectral_features(rl, grads)
    for name, f in features.items():
        assert f["complexity"] == pytest.approx(complexity_score(f["effective_rank"], grads[name]))
        assert f["complexity"] > 0
        assert f["log_complexity"] == pytest.approx(math.log(f["complexity"] + 1e-12))


def test_rank_from_complexity():
    assert rank_from_complexity(math.e**2, alpha=2.0, beta=1.0) == 5
    assert rank_from_complexity(1e9, alpha=2.0, beta=1.0, max_rank=16) == 16
    assert rank_from_complexity(0.0, alpha=2.0, beta=1.0, min_rank=1) == 1


def test_batched_route_matches_the_per_module_singular_values(rl, optimizer):
    from rankrl.lora.factors import singular_values

    train_steps(rl, optimizer, 2)
    rl.resize({"bert.encoder.layer.0.attention.self.key": 2, "bert.encoder.layer.1.output.dense": 0}, optimizer)
    features = module_spectral_features(rl, top_k=(1, 3))
    for name, rank in rl.ranks.items():
        if rank == 0:
            assert features[name]["nuclear_norm"] == 0.0
            continue
        layer = rl.lora_layer(name)
        sigma = singular_values(layer.lora_A["default"].weight, layer.lora_B["default"].weight, rl.scaling(name))
        expected = spectral_features(sigma, (layer.out_features, layer.in_features), rank=rank, top_k=(1, 3))
        for key, value in expected.items():
            assert features[name][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)
