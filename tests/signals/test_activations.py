import pytest
import torch

from rankrl.signals import InputVarianceTracker

from .helpers import make_batch

QUERY0 = "bert.encoder.layer.0.attention.self.query"
FFN1 = "bert.encoder.layer.1.output.dense"  # input: 512 features


def module(rl, name):
    return rl.model.base_model.model.get_submodule(name)


def test_measures_the_known_variance_of_a_controlled_input(rl):
    gen = torch.Generator().manual_seed(0)
    std = torch.linspace(0.5, 3.0, 128)
    x = torch.randn(6, 40, 128, generator=gen) * std + 7.0  # offset must not matter
    expected = x.reshape(-1, 128).var(dim=0, unbiased=False).mean().item()
    assert expected == pytest.approx((std**2).mean().item(), rel=0.1)  # sanity of the construction
    with InputVarianceTracker(rl, every=1) as tracker:
        module(rl, QUERY0)(x)
        assert tracker.variances()[QUERY0] == pytest.approx(expected, rel=1e-6)  # bias-corrected first sample
        assert tracker.samples[QUERY0] == 1
        assert tracker.variances()[FFN1] == 0.0  # never called
        module(rl, QUERY0)(x * 2)
        ema = 0.9 * 0.1 * expected + 0.1 * 4 * expected
        assert tracker.variances()[QUERY0] == pytest.approx(ema / (1 - 0.9**2), rel=1e-6)


def test_padding_tokens_are_left_out(rl):
    batch = make_batch(seed=3, batch=4, seq=10, pad=4)
    seen = []
    base = module(rl, FFN1).get_base_layer()
    handle = base.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    with InputVarianceTracker(rl, every=1) as tracker:
        with torch.no_grad():
            rl.model(**batch)
        got = tracker.variances()[FFN1]
    handle.remove()
    x = seen[0]
    keep = x[batch["attention_mask"].bool()]
    assert got == pytest.approx(keep.var(dim=0, unbiased=False).mean().item(), rel=1e-6)
    assert got != pytest.approx(x.reshape(-1, x.shape[-1]).var(dim=0, unbiased=False).mean().item(), rel=1e-3)


def test_samples_every_k_calls(rl):
    with InputVarianceTracker(rl, every=3) as tracker, torch.no_grad():
        for i in range(7):
            rl.model(**make_batch(i))
        assert set(tracker.samples.values()) == {3}  # calls 1, 4 and 7


def test_hooks_survive_rank_zero_and_regrowth(rl, optimizer):
    tracker = InputVarianceTracker(rl, every=1)
    installed = tracker.hooks_installed
    batch = make_batch(0)
    with torch.no_grad():
        rl.model(**batch)
        rl.set_group_ranks([0, 4], optimizer)
        rl.model(**batch)
        assert not tracker.sync()  # the base layers are the same objects at rank 0
        rl.set_group_ranks([6, 2], optimizer)
        rl.model(**batch)
    assert not tracker.sync()
    assert tracker.hooks_installed == installed
    assert all(count == 3 for count in tracker.samples.values())  # sampled at rank 4, 0 and 6/2
    assert all(v > 0 for v in tracker.variances().values())
    tracker.close()


def test_close_removes_every_hook(rl):
    root = rl.model.base_model
    bases = [module(rl, name) for name in rl.ranks]
    bases = [m.get_base_layer() if hasattr(m, "get_base_layer") else m for m in bases]
    before = sum(len(b._forward_pre_hooks) for b in bases), len(root._forward_pre_hooks), len(root._forward_hooks)
    tracker = InputVarianceTracker(rl, every=1)
    assert sum(len(b._forward_pre_hooks) for b in bases) == before[0] + len(bases)
    tracker.close()
    after = sum(len(b._forward_pre_hooks) for b in bases), len(root._forward_pre_hooks), len(root._forward_hooks)
    assert after == before
    assert tracker.hooks_installed == 0
    with torch.no_grad():
        rl.model(**make_batch(0))
    assert all(count == 0 for count in tracker.samples.values())
    tracker.open()  # resumes
    with torch.no_grad():
        rl.model(**make_batch(0))
    assert all(count == 1 for count in tracker.samples.values())
    tracker.close()


def test_subsample_of_padded_batch_keeps_every_other_real_token(rl):
    batch = make_batch(seed=4, batch=6, seq=10, pad=3)  # 42 real tokens, max_tokens 20 -> every 3rd real token
    seen = []
    base = module(rl, FFN1).get_base_layer()
    handle = base.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    with InputVarianceTracker(rl, every=1, max_tokens=20) as tracker:
        with torch.no_grad():
            rl.model(**batch)
        got = tracker.variances()[FFN1]
    handle.remove()
    keep = seen[0][batch["attention_mask"].bool()][::3]
    assert got == pytest.approx(keep.var(dim=0, unbiased=False).mean().item(), rel=1e-5)
