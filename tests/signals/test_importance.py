import pytest
import torch

from rankrl.signals import ImportanceTracker

from .helpers import make_batch, train_steps

QUERY0 = "bert.encoder.layer.0.attention.self.query"
FFN1 = "bert.encoder.layer.1.output.dense"


def factors(rl, name):
    layer = rl.lora_layer(name)
    return layer.lora_A[rl.adapter_name].weight, layer.lora_B[rl.adapter_name].weight


def backward(rl, seed=100):
    rl.model(**make_batch(seed)).loss.backward()


def test_zero_gradient_module_has_exactly_zero_importance(rl, optimizer):
    train_steps(rl, optimizer, 3)  # B moves off zero, so every module has gradient
    tracker = ImportanceTracker(rl)
    for i in range(4):
        backward(rl, seed=10 + i)
        for p in factors(rl, QUERY0):
            p.grad.zero_()
        tracker.accumulate()
        optimizer.zero_grad()
    features = tracker.module_features()
    assert features[QUERY0] == {"importance": 0.0, "sensitivity": 0.0, "grad_norm": 0.0}
    others = [f for name, f in features.items() if name != QUERY0]
    assert all(f["importance"] > 0 and f["sensitivity"] > 0 and f["grad_norm"] > 0 for f in others)


def test_module_without_gradient_tensor_is_zero(rl, optimizer):
    train_steps(rl, optimizer, 2)
    tracker = ImportanceTracker(rl)
    backward(rl)
    for p in factors(rl, FFN1):
        p.grad = None
    tracker.accumulate()
    assert tracker.module_features()[FFN1]["importance"] == 0.0


def test_matches_adalora_reference_per_element(rl, optimizer):
    train_steps(rl, optimizer, 2)
    b1, b2 = 0.8, 0.7
    tracker = ImportanceTracker(rl, beta1=b1, beta2=b2, grad_beta=0.5, bias_correction=False)
    A, B = factors(rl, QUERY0)
    ipt = [torch.zeros_like(A), torch.zeros_like(B)]
    unc = [torch.zeros_like(A), torch.zeros_like(B)]
    norms = []
    for i in range(3):
        backward(rl, seed=20 + i)
        tracker.accumulate()
        for j, p in enumerate((A, B)):
            cur = (p * p.grad).abs()
            ipt[j] = b1 * ipt[j] + (1 - b1) * cur
            unc[j] = b2 * unc[j] + (1 - b2) * (cur - ipt[j]).abs()
        norms.append(torch.sqrt(A.grad.norm() ** 2 + B.grad.norm() ** 2).item())
        optimizer.step()
        optimizer.zero_grad()
    expected = sum((i * u).sum().item() for i, u in zip(ipt, unc, strict=True))
    ema = 0.0
    for n in norms:
        ema = 0.5 * ema + 0.5 * n
    got = tracker.module_features()[QUERY0]
    assert got["importance"] == pytest.approx(expected, rel=1e-5)
    assert got["sensitivity"] == pytest.approx(sum(i.sum().item() for i in ipt), rel=1e-5)
    assert got["grad_norm"] == pytest.approx(ema, rel=1e-5)


def test_bias_corrected_first_reading_is_the_raw_figures(rl, optimizer):
    train_steps(rl, optimizer, 2)
    tracker = ImportanceTracker(rl)
    backward(rl)
    A, B = factors(rl, QUERY0)
    tracker.accumulate()
    got = tracker.module_features()[QUERY0]
    assert got["sensitivity"] == pytest.approx(((A * A.grad).abs().sum() + (B * B.grad).abs().sum()).item(), rel=1e-5)
    assert got["grad_norm"] == pytest.approx(torch.sqrt(A.grad.norm() ** 2 + B.grad.norm() ** 2).item(), rel=1e-5)


def test_survives_grow_shrink_rank_zero_and_regrowth(rl, optimizer):
    tracker = ImportanceTracker(rl)
    train_steps(rl, optimizer, 3, tracker)
    before = tracker.module_features()

    rl.set_group_ranks([8, 4], optimizer)  # grow group 0: per-element state carried exactly
    after_grow = tracker.module_features()
    for name in rl.group_modules(0):
        assert after_grow[name]["importance"] == pytest.approx(before[name]["importance"], rel=1e-6)
        assert after_grow[name]["sensitivity"] == pytest.approx(before[name]["sensitivity"], rel=1e-6)
    train_steps(rl, optimizer, 2, tracker, seed=10)

    rl.set_group_ranks([2, 0], optimizer)  # shrink group 0 (state reset), detach group 1
    after_shrink = tracker.module_features()
    for name in rl.group_modules(0):
        assert after_shrink[name]["importance"] == 0.0  # fresh state, nothing accumulated yet
        assert after_shrink[name]["grad_norm"] > 0.0  # scalar EMA carried across the shrink
    for name in rl.group_modules(1):
        assert after_shrink[name] == {"importance": 0.0, "sensitivity": 0.0, "grad_norm": 0.0}
    train_steps(rl, optimizer, 2, tracker, seed=20)
    features = tracker.module_features()
    assert all(features[n]["importance"] > 0 for n in rl.group_modules(0))
    assert all(features[n]["importance"] == 0.0 for n in rl.group_modules(1))

    rl.set_group_ranks([2, 3], optimizer)  # regrow group 1 from rank 0: B = 0, so I = 0 on its first step
    train_steps(rl, optimizer, 3, tracker, seed=30)
    features = tracker.module_features()
    assert all(features[n]["importance"] > 0 and features[n]["grad_norm"] > 0 for n in rl.ranks)
    assert tracker.state_bytes() == 2 * sum(p.nbytes for n in rl.ranks for p in factors(rl, n))


def test_every_skips_calls(rl, optimizer):
    tracker = ImportanceTracker(rl, every=3)
    train_steps(rl, optimizer, 7, tracker)
    assert tracker.updates == 3


def test_first_step_of_fresh_lora_is_zero(rl):
    tracker = ImportanceTracker(rl)
    backward(rl)
    tracker.accumulate()
    features = tracker.module_features()
    assert all(f["importance"] == 0.0 for f in features.values())  # B = 0: w*g vanishes on A and B
    assert all(f["grad_norm"] > 0.0 for f in features.values())  # but B has gradient


def test_detach_and_regrow_between_reads_starts_afresh(rl, optimizer):
    tracker = ImportanceTracker(rl)
    train_steps(rl, optimizer, 3, tracker)
    rl.set_group_ranks([0, 4], optimizer)
    rl.set_group_ranks([4, 4], optimizer)  # same shapes, new layers, never seen at rank 0 by the tracker
    features = tracker.module_features()
    assert all(features[n] == {"importance": 0.0, "sensitivity": 0.0, "grad_norm": 0.0} for n in rl.group_modules(0))
    assert all(features[n]["importance"] > 0 for n in rl.group_modules(1))
