"""RankedLoRA: live grow/shrink/zero on a real PEFT model, config consistency and vanilla-PEFT export."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from rankrl import RankedLoRA, RankedLoRAError
from rankrl.lora.factors import lora_scaling
from tests.conftest import make_batch, make_tiny_bert


def _logits(rl: RankedLoRA, batch: dict) -> torch.Tensor:
    rl.model.eval()
    with torch.no_grad():
        return rl.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _train(rl: RankedLoRA, optimizer, batch, steps: int = 2) -> float:
    rl.model.train()
    loss = None
    for _ in range(steps):
        loss = rl.model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return loss.item()


def _assert_consistent(rl: RankedLoRA) -> None:
    config = rl.model.peft_config[rl.adapter_name]
    for name, rank in rl.ranks.items():
        module = rl.model.base_model.model.get_submodule(name)
        if rank == 0:
            assert not isinstance(module, LoraLayer), name
            assert name in config.exclude_modules
            continue
        assert isinstance(module, LoraLayer)
        assert module.r[rl.adapter_name] == rank
        assert module.lora_A[rl.adapter_name].weight.shape[0] == rank
        assert module.lora_B[rl.adapter_name].weight.shape[1] == rank
        expected = lora_scaling(config.lora_alpha, rank, config.use_rslora)
        assert module.scaling[rl.adapter_name] == pytest.approx(expected)
        assert config.rank_pattern.get(name, config.r) == rank
        assert not config.exclude_modules or name not in config.exclude_modules


def _roundtrip_diff(rl: RankedLoRA, tmp_path, batch, hidden_size: int) -> float:
    out = tmp_path / "adapter"
    rl.save_pretrained(out)
    base = make_tiny_bert(hidden_size=hidden_size, seed=0)
    loaded = PeftModel.from_pretrained(base, str(out)).eval()  # vanilla PEFT, no rankrl involvement
    with torch.no_grad():
        theirs = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return (theirs - _logits(rl, batch)).abs().max().item()


rank_sequences = st.lists(st.lists(st.integers(0, 9), min_size=2, max_size=2), min_size=1, max_size=5)


@settings(max_examples=12, deadline=None)
@given(rank_sequences, st.integers(16, 40), st.booleans())
def test_random_rank_sequences_stay_exact_and_export_to_vanilla_peft(tmp_path_factory, sequence, hidden, rslora):
    hidden = hidden // 8 * 8
    rl = RankedLoRA.attach(make_tiny_bert(hidden_size=hidden), rank=4, num_groups=2, use_rslora=rslora)
    batch = make_batch()
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
    _train(rl, optimizer, batch, steps=1)  # non-zero B so that shrinking really approximates
    for group_ranks in sequence:
        before = _logits(rl, batch)
        grows_only = all(new >= old for new, old in zip(group_ranks, rl.group_ranks, strict=True)
                         if old > 0)
        reference = {name: r for name, r in rl.ranks.items()}
        rl.set_group_ranks(group_ranks, optimizer=optimizer)
        _assert_consistent(rl)
        if grows_only and all(reference[n] == 0 or rl.ranks[n] > 0 for n in reference):
            # Growth (and regrowth from 0 with B = 0) keeps the function.
            torch.testing.assert_close(_logits(rl, batch), before, rtol=0, atol=1e-5)
        assert rl.group_ranks == group_ranks
        if any(group_ranks):
            assert _roundtrip_diff(rl, tmp_path_factory.mktemp("rt"), batch, hidden) <= 1e-6
        assert torch.isfinite(torch.tensor(_train(rl, optimizer, batch, steps=1)))


def test_grow_keeps_outputs_and_adam_moments(batch):
    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
    _train(rl, optimizer, batch, steps=3)
    name = "bert.encoder.layer.1.attention.self.query"
    layer = rl.lora_layer(name)
    old_A, old_B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    state_A = {k: v.clone() for k, v in optimizer.state[old_A].items()}
    state_B = {k: v.clone() for k, v in optimizer.state[old_B].items()}
    before = _logits(rl, batch)
    rl.resize({name: 10}, optimizer=optimizer)
    torch.testing.assert_close(_logits(rl, batch), before, rtol=0, atol=1e-6)
    new_A, new_B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert new_A.shape == (10, 32) and new_B.shape == (32, 10)
    ratio = lora_scaling(8, 10, False) / lora_scaling(8, 4, False)
    assert torch.equal(optimizer.state[new_A]["exp_avg"][:4], state_A["exp_avg"])
    assert not optimizer.state[new_A]["exp_avg"][4:].any()
    torch.testing.assert_close(optimizer.state[new_B]["exp_avg"][:, :4], state_B["exp_avg"] * ratio)
    torch.testing.assert_close(optimizer.state[new_B]["exp_avg_sq"][:, :4], state_B["exp_avg_sq"] * ratio**2)
    assert optimizer.state[new_B]["step"] == state_B["step"]
    assert old_A not in optimizer.state and all(p is not old_A for g in optimizer.param_groups for p in g["params"])
    snapshot = new_A.detach().clone()
    _train(rl, optimizer, batch, steps=2)
    assert new_A.grad is None and not torch.equal(new_A.detach(), snapshot)


def test_shrink_resets_moments_and_training_continues(batch):
    rl = RankedLoRA.attach(make_tiny_bert(), rank=8, num_groups=2)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
    _train(rl, optimizer, batch, steps=2)
    count_before = sum(len(g["params"]) for g in optimizer.param_groups)
    rl.set_group_ranks([2, 3], optimizer=optimizer)
    for name in rl.ranks:
        layer = rl.lora_layer(name)
        assert layer.lora_A["default"].weight not in optimizer.state
    assert sum(len(g["params"]) for g in optimizer.param_groups) == count_before
    loss = _train(rl, optimizer, batch, steps=3)
    assert torch.isfinite(torch.tensor(loss))
    assert all(p in optimizer.state for p in rl.trainable_parameters())


def test_rank_zero_detaches_and_regrowth_restores(batch):
    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
    _train(rl, optimizer, batch, steps=2)
    params_before = sum(p.numel() for p in rl.trainable_parameters())
    rl.set_group_ranks([0, 4], optimizer=optimizer)
    bottom = rl.group_modules(0)
    for name in bottom:
        module = rl.model.base_model.model.get_submodule(name)
        assert type(module) is torch.nn.Linear and not any(p.requires_grad for p in module.parameters())
    freed = sum(4 * (m.in_features + m.out_features) for m in
                (rl.model.base_model.model.get_submodule(n) for n in bottom))
    assert sum(p.numel() for p in rl.trainable_parameters()) == params_before - freed
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in rl.trainable_parameters()}
    _train(rl, optimizer, batch, steps=1)
    before = _logits(rl, batch)
    rl.set_group_ranks([3, 4], optimizer=optimizer)
    torch.testing.assert_close(_logits(rl, batch), before, rtol=0, atol=1e-6)  # fresh adapters start at B = 0
    new_params = [rl.lora_layer(n).lora_A["default"].weight for n in bottom]
    snapshots = [p.detach().clone() for p in new_params]
    _train(rl, optimizer, batch, steps=2)
    assert all(not torch.equal(p.detach(), s) for p, s in zip(new_params, snapshots, strict=True))
    _assert_consistent(rl)


def test_bottom_groups_at_zero_record_no_autograd_below(batch):
    rl = RankedLoRA.attach(make_tiny_bert(layers=4), rank=8, num_groups=4)
    seen = {}
    layers = rl.model.base_model.model.bert.encoder.layer
    def record(k: int):
        return lambda m, i, o: seen.__setitem__(k, o[0].requires_grad if isinstance(o, tuple) else o.requires_grad)

    hooks = [layer.register_forward_hook(record(k)) for k, layer in enumerate(layers)]
    rl.model.train()
    full = rl.memory(batch=batch).activations
    assert all(seen.values())
    rl.set_group_ranks([0, 0, 8, 8])
    half = rl.memory(batch=batch).activations
    for hook in hooks:
        hook.remove()
    assert seen == {0: False, 1: False, 2: True, 3: True}
    assert 0 < half < 0.75 * full


def test_memory_figures_are_sums_of_real_tensors(batch):
    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
    _train(rl, optimizer, batch, steps=1)
    report = rl.memory(optimizer=optimizer, batch=batch)
    trainable = [p for p in rl.model.parameters() if p.requires_grad]
    assert report.trainable_parameters == sum(p.numel() * p.element_size() for p in trainable)
    assert report.trainable_count == sum(p.numel() for p in trainable)
    assert report.gradients == report.trainable_parameters  # a measured backward fills every trainable grad
    assert all(p.grad is None for p in trainable)  # ...and the measurement gave the held grads back
    expected_state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                         if torch.is_tensor(v))
    assert report.optimizer_state == expected_state
    frozen = sum(p.numel() * p.element_size() for p in rl.model.parameters() if not p.requires_grad)
    assert report.frozen_parameters == frozen + sum(b.numel() * b.element_size() for b in rl.model.buffers())
    assert report.activations > 0 and report.activations_measured
    assert report.total == (report.trainable_parameters + report.frozen_parameters + report.gradients
                            + report.optimizer_state + report.activations)
    assert report.cuda_max_allocated is None and report.nvml_free is None  # CPU falls back quietly
    rl.set_group_ranks([8, 8], optimizer=optimizer)
    assert rl.memory(optimizer=optimizer).trainable_parameters > report.trainable_parameters


def test_saved_activation_meter_counts_exact_tensors():
    from rankrl.memory import SavedActivationMeter

    weight = torch.randn(64, 32, requires_grad=True)
    x = torch.randn(8, 64, requires_grad=True)
    with SavedActivationMeter(exclude=[weight]) as meter:
        hidden = x @ weight  # saves x and weight; weight is a parameter, x is an activation
        out = torch.exp(hidden)  # saves its result
    assert meter.bytes == x.nbytes + out.nbytes
    assert meter.count == 2


def test_measure_step_leaves_training_untouched(batch):
    def run(measure: bool) -> list[float]:
        torch.manual_seed(0)
        rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2, lora_dropout=0.1)
        optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
        losses = []
        rl.model.train()
        for _ in range(3):
            loss = rl.model(**batch).loss
            loss.backward()
            if measure:
                rl.memory(optimizer=optimizer, batch=batch)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        return losses

    assert run(True) == run(False)


def test_unobserved_passes_restore_the_flag_when_nested_or_failing():
    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    with pytest.raises(RuntimeError, match="inside"), rl.unobserved():
        with rl.unobserved():
            assert rl.measuring
        assert rl.measuring  # the outer block still holds
        raise RuntimeError("inside")
    assert not rl.measuring


def test_adapter_config_is_plain_peft(tmp_path, batch):
    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    rl.set_group_ranks([0, 6])
    rl.resize({"bert.encoder.layer.1.output.dense": 2})
    rl.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 6
    assert config["rank_pattern"] == {"bert.encoder.layer.1.output.dense": 2}
    assert sorted(config["exclude_modules"]) == sorted(rl.group_modules(0))


def test_hf_trainer_run_with_resize_in_the_middle(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    rows = make_batch(batch_size=32, seed=1)
    data = Dataset.from_dict({k: v.tolist() for k, v in rows.items()})
    seen = {}

    class ResizeAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            if state.global_step == 3:
                seen["wrapper"] = type(optimizer).__name__
                rl.set_group_ranks([0, 8], optimizer=optimizer)
                seen["params"] = [rl.lora_layer(n).lora_A["default"].weight for n in rl.group_modules(1)]
                seen["before"] = [p.detach().clone() for p in seen["params"]]

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=8, learning_rate=1e-2,
                             logging_steps=100, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=rl.model, args=args, train_dataset=data, callbacks=[ResizeAtStep()])
    result = trainer.train()
    assert seen["wrapper"] == "AcceleratedOptimizer"
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert all(not torch.equal(p.detach(), b) for p, b in zip(seen["params"], seen["before"], strict=True))
    inner = trainer.optimizer.optimizer
    assert {id(p) for g in inner.param_groups for p in g["params"]} == {id(p) for p in rl.trainable_parameters()}


# ---------------------------------------------------------------- bad input
def _lora_layer_count(model) -> int:
    return sum(isinstance(m, LoraLayer) for m in model.modules())


def test_targets_matching_nothing_leave_the_model_unchanged():
    model = make_tiny_bert()
    with pytest.raises(RankedLoRAError, match="match no module"):
        RankedLoRA.attach(model, target_modules=["q_proj"])
    assert _lora_layer_count(model) == 0 and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("option", ["use_dora", "lora_bias"])
def test_unsupported_variants_are_refused(option):
    model = make_tiny_bert()
    with pytest.raises(RankedLoRAError, match=option):
        RankedLoRA.attach(model, **{option: True})
    assert _lora_layer_count(model) == 0


@pytest.mark.parametrize("rank", [0, -1, 2.5])
def test_bad_initial_rank(rank):
    with pytest.raises(RankedLoRAError, match="positive integer"):
        RankedLoRA.attach(make_tiny_bert(), rank=rank)


def test_negative_rank_and_unknown_module_change_nothing(batch):
    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    before, logits = rl.ranks, _logits(rl, batch)
    name = next(iter(rl.ranks))
    with pytest.raises(RankedLoRAError, match=">= 0"):
        rl.resize({name: 8, "bert.encoder.layer.1.output.dense": -1})
    with pytest.raises(RankedLoRAError, match="Unknown LoRA module"):
        rl.resize({name: 8, "nope": 2})
    with pytest.raises(RankedLoRAError, match="out of range"):
        rl.set_group_rank(2, 4)
    with pytest.raises(RankedLoRAError, match="Expected 2 group ranks"):
        rl.set_group_ranks([1, 2, 3])
    assert rl.ranks == before
    torch.testing.assert_close(_logits(rl, batch), logits, rtol=0, atol=0)


def test_saving_with_every_module_at_zero_is_refused(tmp_path):
    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    rl.set_group_ranks([0, 0])
    with pytest.raises(RankedLoRAError, match="rank 0"):
        rl.save_pretrained(tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_split_by_kind_groups():
    rl = RankedLoRA.attach(make_tiny_bert(layers=4), rank=2, num_groups=2, split_by_kind=True)
    assert rl.num_groups == 4
    assert rl.groups["bert.encoder.layer.0.attention.self.query"] == 0
    assert rl.groups["bert.encoder.layer.1.intermediate.dense"] == 1
    assert rl.groups["bert.encoder.layer.3.attention.output.dense"] == 2
    assert rl.groups["bert.encoder.layer.2.output.dense"] == 3


def test_parameter_cache_follows_resizes_and_refresh():
    """The cached parameter list changes with every resize; a change made by hand needs ``refresh()``."""
    def ids(params) -> list[int]:
        return [id(p) for p in params]

    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    before = rl.parameters()
    assert ids(before) == ids(rl.model.parameters())
    rl.set_group_ranks([0, 6])
    assert ids(rl.parameters()) == ids(rl.model.parameters()) and len(rl.parameters()) < len(before)
    head = rl.model.base_model.model.classifier
    head.modules_to_save["default"] = torch.nn.Linear(head.in_features, 3)
    assert ids(rl.parameters()) != ids(rl.model.parameters())  # stale until told
    rl.refresh()
    assert ids(rl.parameters()) == ids(rl.model.parameters())
