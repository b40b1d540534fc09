import math

import pytest
import torch

from rankrl.signals import SignalReader

from .helpers import attach, make_batch, train_steps

GROUP_FEATURES = {
    "rank", "live_frac", "importance", "sensitivity", "complexity", "grad_norm", "numerical_rank",
    "effective_rank", "stable_rank", "rank_utilization", "top1_energy", "input_variance", "log_complexity",
    "importance_share", "sensitivity_share", "complexity_share", "input_variance_share", "grad_norm_share",
    "grow_cost_frac", "shrink_free_frac", "grow_fits",
}


def run(rl, optimizer, reader, steps, seed=0):
    for i in range(steps):
        loss = rl.model(**make_batch(seed + i)).loss
        loss.backward()
        reader.after_backward()
        reader.update_loss(loss)
        optimizer.step()
        optimizer.zero_grad()


def test_named_group_features_and_shares(rl, optimizer):
    with SignalReader(rl, optimizer=optimizer, budget_bytes=64 * 2**20, variance_every=1) as reader:
        run(rl, optimizer, reader, 3)
        reader.update_eval(0.5)
        signals = reader.read(memory_batch=make_batch(99))
    flat = signals.to_dict()
    assert all(isinstance(v, float) and math.isfinite(v) for v in flat.values())
    for g in range(rl.num_groups):
        assert {f"group{g}/{key}" for key in GROUP_FEATURES} <= set(flat)
    assert {"loss/ema_rel", "loss/slope_rel", "loss/diverged", "eval/accuracy", "memory/headroom_frac"} <= set(flat)
    for key in ("importance_share", "grad_norm_share", "complexity_share", "input_variance_share"):
        assert sum(flat[f"group{g}/{key}"] for g in range(rl.num_groups)) == pytest.approx(1.0)
    assert flat["importance/total"] == pytest.approx(sum(flat[f"group{g}/importance"] for g in range(rl.num_groups)))
    assert signals.group_matrix(["rank", "importance_share"]) == [
        [flat[f"group{g}/rank"], flat[f"group{g}/importance_share"]] for g in range(rl.num_groups)
    ]


def test_rank_zero_group_has_no_importance_but_input_variance(rl, optimizer):
    with SignalReader(rl, optimizer=optimizer, variance_every=1) as reader:
        run(rl, optimizer, reader, 2)
        rl.set_group_ranks([0, 4], optimizer)
        run(rl, optimizer, reader, 2, seed=10)
        flat = reader.read().to_dict()
    assert flat["group0/importance"] == flat["group0/importance_share"] == 0.0
    assert flat["group0/effective_rank"] == flat["group0/live_frac"] == 0.0
    assert flat["group1/importance_share"] == 1.0
    assert flat["group0/input_variance"] > 0.0


def test_spectral_features_are_kept_between_computations(rl, optimizer):
    reader = SignalReader(rl, optimizer=optimizer, input_variance=False)
    run(rl, optimizer, reader, 2)
    assert reader.read(spectral=False).to_dict()["group0/effective_rank"] == 0.0  # never computed yet
    first = reader.read().to_dict()["group0/effective_rank"]
    run(rl, optimizer, reader, 2, seed=5)
    assert first > 0 and reader.read(spectral=False).to_dict()["group0/effective_rank"] == first
    reader.close()


def test_no_zero_division_before_any_step(rl):
    with SignalReader(rl) as reader:
        flat = reader.read().to_dict()
    assert all(math.isfinite(v) for v in flat.values())
    assert flat["group0/importance_share"] == 0.0 and "memory/used_frac" not in flat


def test_trainer_callback_reads_gradients_before_they_are_zeroed(rl, tmp_path):
    from transformers import Trainer, TrainingArguments

    from rankrl.signals import SignalsCallback

    rows = []
    for i in range(4):
        batch = make_batch(i, batch=4, seq=8)
        rows += [{k: v[j] for k, v in batch.items()} for j in range(4)]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=4,
                             logging_steps=1, report_to=[], save_strategy="no", learning_rate=1e-2,
                             use_cpu=True, disable_tqdm=True)
    reader = SignalReader(rl, input_variance=False)
    trainer = Trainer(model=rl.model, args=args, train_dataset=rows, callbacks=[SignalsCallback(reader)])
    trainer.train()
    flat = reader.read().to_dict()
    assert reader.importance.updates == 4
    assert flat["importance/total"] > 0  # B moved off zero after the first step, gradients were live
    assert flat["loss/steps"] == 4
    assert reader.optimizer is not None


def test_memory_measurement_passes_are_not_sampled_as_inputs(rl, optimizer):
    with SignalReader(rl, optimizer=optimizer, budget_bytes=64 * 2**20, variance_every=1) as reader:
        run(rl, optimizer, reader, 2)
        before = dict(reader.variance.samples)
        hooks = reader.variance.hooks_installed
        reader.read(memory_batch=make_batch(5))
        assert reader.variance.samples == before
        assert reader.variance.hooks_installed == hooks
        run(rl, optimizer, reader, 1, seed=9)
        assert all(reader.variance.samples[n] == before[n] + 1 for n in before)
    assert reader.variance.hooks_installed == 0


def test_tracker_state_round_trips_into_a_fresh_reader_at_the_same_ranks():
    """The EMAs, counters and sampling phase of every tracker reload exactly (what a resume restores)."""
    rl = attach()
    rl.set_group_ranks([2, 4])
    reader = SignalReader(rl, variance_every=1)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-3)
    train_steps(rl, optimizer, 3, tracker=reader.importance)
    for loss in (1.0, 0.8, 0.7):
        reader.update_loss(loss)
    reader.update_eval(0.6)
    state = reader.state_dict()
    assert set(state["tensors"]) == {f"importance/{n}/{k}" for n, r in rl.ranks.items() if r
                                    for k in ("ipt_A", "ipt_B", "unc_A", "unc_B")}
    fresh = SignalReader(rl, variance_every=1)  # same model and ranks, trackers at zero
    fresh.load_state_dict(state)
    assert fresh.importance.module_features() == reader.importance.module_features()
    assert fresh.variance.variances() == reader.variance.variances()
    assert fresh.loss.features() == reader.loss.features()
    rl.model(**make_batch(7))  # the sampling phase continues identically in both
    assert fresh.variance.state_dict() == reader.variance.state_dict()
    rl.set_group_ranks([4, 4])
    with pytest.raises(ValueError, match="other ranks|restore the ranks first"):
        SignalReader(rl).load_state_dict(state)
