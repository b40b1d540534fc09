"""FineTuneSession: determinism, checkpoint/restore, evaluation, divergence, cheap resets."""

from __future__ import annotations

import math

import pytest
import torch

from rankrl.session import FineTuneSession, SessionConfig, macro_f1

TASK = "synthetic:keyword?n_train=256&n_eval=64"


def _config(**overrides) -> SessionConfig:
    values = dict(model="tiny", task=TASK, batch_size=8, eval_size=48, max_length=32, num_groups=2, rank=4, lr=3e-3)
    values.update(overrides)
    return SessionConfig(**values)


@pytest.fixture(scope="module")
def session():
    return FineTuneSession(_config())


def test_same_seed_same_losses_and_different_seed_differs():
    a, b, c = FineTuneSession(_config()), FineTuneSession(_config()), FineTuneSession(_config(seed=1))
    losses = a.train(6).losses
    assert losses == b.train(6).losses
    assert losses != c.train(6).losses
    assert a.evaluate() == b.evaluate()


def test_reset_restarts_from_fresh_adapters(session):
    session.reset(seed=5)
    first = session.train(4).losses
    session.set_group_ranks([0, 8])
    session.train(3)
    session.reset(seed=5)
    assert session.rl.group_ranks == [4, 4] and session.step == 0
    assert session.train(4).losses == first


def test_checkpoint_restore_resumes_identically(session, tmp_path):
    session.reset(seed=2)
    session.train(3)
    session.set_group_ranks([2, 6])
    session.train(2)
    snapshot = session.checkpoint()
    session.save(tmp_path / "ckpt.pt")
    expected = session.train(5).losses
    expected_eval = session.evaluate()
    session.set_group_ranks([0, 1])
    session.restore(snapshot)
    assert session.rl.group_ranks == [2, 6]
    assert session.train(5).losses == expected
    assert session.evaluate() == expected_eval
    fresh = FineTuneSession(_config())
    fresh.load(tmp_path / "ckpt.pt")
    assert fresh.step == 5 and fresh.train(5).losses == expected
    with pytest.raises(ValueError, match="task="):
        FineTuneSession(_config(task="synthetic:count?n_train=64&n_eval=32")).load(tmp_path / "ckpt.pt")


def test_evaluate_uses_a_fixed_subset_of_the_configured_size(session):
    session.reset(seed=0)
    assert len(session._eval_rows) == 48
    first, second = session.evaluate(), session.evaluate(batch_size=7)
    assert first.accuracy == second.accuracy and first.macro_f1 == second.macro_f1
    assert math.isclose(first.loss, second.loss, rel_tol=1e-5)
    assert 0 <= first.accuracy <= 1 and 0 <= first.macro_f1 <= 1


def test_non_finite_loss_stops_without_applying_the_update(session):
    session.reset(seed=0)
    session.train(1)
    weight = session.rl.model.base_model.model.classifier.modules_to_save["default"].weight
    with torch.no_grad():
        weight[0, 0] = float("nan")
    lora = [p.detach().clone() for p in session.rl.trainable_parameters() if p is not weight]
    result = session.train(3)
    assert result.diverged and len(result.losses) == 1 and math.isnan(result.losses[0])
    after = [p.detach() for p in session.rl.trainable_parameters() if p is not weight]
    assert all(torch.equal(x, y) for x, y in zip(lora, after, strict=True))
    assert session.step == 1


def test_memory_reflects_ranks(session):
    session.reset(seed=0)
    session.train(1)
    small = session.memory()
    session.set_group_ranks([8, 8])
    session.train(1)
    large = session.memory()
    assert large.trainable_parameters > small.trainable_parameters
    assert large.optimizer_state > small.optimizer_state
    assert large.activations > small.activations > 0
    assert large.gradients == large.trainable_parameters


def test_data_order_is_a_function_of_seed_and_step(session):
    session.reset(seed=3)
    a = session.batch_indices(7)
    assert a == session.batch_indices(7) and len(a) == 8
    epoch = [i for s in range(len(session._train) // 8) for i in session.batch_indices(s)]
    assert sorted(epoch) == list(range(len(session._train)))


def test_macro_f1_matches_hand_computation():
    labels = torch.tensor([0, 0, 1, 1, 2])
    predictions = torch.tensor([0, 1, 1, 1, 0])
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 2, fp 1, fn 0 -> 0.8; class 2: tp 0 -> 0
    assert macro_f1(predictions, labels, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_checkpoint_restore_keeps_frozen_modules_and_their_values(session, tmp_path):
    session.reset(seed=3)
    session.train(3)
    session.rl.freeze(0, optimizer=session.optimizer)
    session.train(2)
    snapshot = session.checkpoint()
    session.save(tmp_path / "ckpt.pt")
    frozen = {name: p.detach().clone() for name, p in session.rl.model.named_parameters()
              if any(p is q for q in session.rl.frozen_factors())}
    expected = session.train(4).losses
    session.rl.thaw(0, optimizer=session.optimizer)
    session.train(2)  # the thawed factors move
    session.restore(snapshot)
    assert session.rl.frozen == set(session.rl.group_modules(0))
    named = dict(session.rl.model.named_parameters())
    assert frozen and all(torch.equal(named[n], v) and not named[n].requires_grad for n, v in frozen.items())
    assert session.train(4).losses == expected
    fresh = FineTuneSession(_config())
    fresh.load(tmp_path / "ckpt.pt")
    assert fresh.rl.frozen == set(fresh.rl.group_modules(0)) and fresh.train(4).losses == expected
