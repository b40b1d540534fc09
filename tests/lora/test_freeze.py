"""RankedLoRA.freeze / thaw: exact values, no gradients, optimizer membership, truncated backward, export."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from rankrl import RankedLoRA, RankedLoRAError
from tests.conftest import make_batch, make_tiny_bert


def _logits(rl: RankedLoRA, batch: dict) -> torch.Tensor:
    rl.model.eval()
    with torch.no_grad():
        return rl.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _train(rl: RankedLoRA, optimizer, batch, steps: int = 2) -> None:
    rl.model.train()
    for _ in range(steps):
        rl.model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def _factors(rl: RankedLoRA, name: str) -> list[torch.nn.Parameter]:
    layer = rl.lora_layer(name)
    return [layer.lora_A["default"].weight, layer.lora_B["default"].weight]


def _optimized(optimizer) -> set[int]:
    inner = getattr(optimizer, "optimizer", optimizer)
    return {id(p) for group in inner.param_groups for p in group["params"]}


def _trained(layers: int = 2, groups: int = 2, rank: int = 4, batch=None):
    rl = RankedLoRA.attach(make_tiny_bert(layers=layers), rank=rank, num_groups=groups)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
    _train(rl, optimizer, batch if batch is not None else make_batch())  # non-zero B: freezing keeps something
    return rl, optimizer


def test_freeze_and_thaw_keep_logits_to_the_bit_and_move_the_optimizer(batch):
    rl, optimizer = _trained(batch=batch)
    rl.model.train()
    rl.model(**batch).loss.backward()  # held gradients, which a freeze must drop
    bottom = rl.group_modules(0)
    frozen_params = [p for name in bottom for p in _factors(rl, name)]
    assert all(p in optimizer.state for p in frozen_params)
    before = _logits(rl, batch)

    assert rl.freeze(0, optimizer=optimizer) == bottom
    assert torch.equal(_logits(rl, batch), before)
    assert rl.frozen == set(bottom) and rl.frozen_groups == [True, False]
    assert rl.group_frozen(0) and not rl.group_frozen(1)
    for p in frozen_params:
        assert not p.requires_grad and p.grad is None and p not in optimizer.state
    assert _optimized(optimizer) == {id(p) for p in rl.trainable_parameters()}
    assert not {id(p) for p in frozen_params} & {id(p) for p in rl.trainable_parameters()}
    assert rl.freeze(bottom, optimizer=optimizer) == []  # already frozen: nothing changes

    snapshots = [p.detach().clone() for p in frozen_params]
    live = _factors(rl, rl.group_modules(1)[0])[0]
    live_before = live.detach().clone()
    _train(rl, optimizer, batch, steps=2)
    assert all(torch.equal(p, s) for p, s in zip(frozen_params, snapshots, strict=True))
    assert all(p.grad is None for p in frozen_params)
    assert not torch.equal(live.detach(), live_before)

    before = _logits(rl, batch)
    assert rl.thaw([0], optimizer=optimizer) == bottom
    assert torch.equal(_logits(rl, batch), before)
    assert rl.frozen == set() and rl.frozen_groups == [False, False]
    assert all(p.requires_grad and p not in optimizer.state for p in frozen_params)  # back with empty state
    assert _optimized(optimizer) == {id(p) for p in rl.trainable_parameters()}
    assert rl.thaw(0, optimizer=optimizer) == []
    _train(rl, optimizer, batch, steps=1)
    assert all(p in optimizer.state for p in frozen_params)
    assert not all(torch.equal(p, s) for p, s in zip(frozen_params, snapshots, strict=True))


def test_freeze_by_module_names_and_groups_skip_rank_zero(batch):
    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    zero, *rest = rl.group_modules(0)
    rl.resize({zero: 0})
    assert rl.freeze(0) == rest  # the rank-0 module has no adapter to freeze
    assert rl.frozen_groups == [True, False]  # every live module of group 0 is frozen
    one = rl.group_modules(1)[2]
    assert rl.freeze([one, rest[0]]) == [one]
    assert rl.thaw(one) == [one] and rl.frozen == set(rest)
    rl.resize({name: 0 for name in rest})
    assert rl.frozen == set() and rl.frozen_groups == [False, False]  # no live module: not "frozen"


def test_accelerated_optimizer_is_repaired(batch):
    from accelerate import Accelerator

    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(rl.model, torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2))
    assert type(optimizer).__name__ == "AcceleratedOptimizer"
    _train(rl, optimizer, batch, steps=2)
    frozen_params = [p for name in rl.group_modules(1) for p in _factors(rl, name)]
    rl.freeze(1, optimizer=optimizer)
    inner = optimizer.optimizer
    assert all(p not in inner.state for p in frozen_params)
    assert _optimized(optimizer) == {id(p) for p in rl.trainable_parameters()}
    _train(rl, optimizer, batch, steps=1)
    rl.thaw(1, optimizer=optimizer)
    assert _optimized(optimizer) == {id(p) for p in rl.trainable_parameters()}
    _train(rl, optimizer, batch, steps=1)
    assert all(p in inner.state for p in frozen_params)


def test_frozen_bottom_half_saves_what_rank_zero_saves(batch):
    """Nothing below the lowest trainable adapter is recorded: frozen factors cost no backward there."""
    def saved(action) -> tuple[int, dict]:
        rl = RankedLoRA.attach(make_tiny_bert(layers=4), rank=8, num_groups=4)
        action(rl)
        seen = {}
        hooks = [layer.register_forward_hook(
            lambda m, i, o, k=k: seen.__setitem__(k, (o[0] if isinstance(o, tuple) else o).requires_grad))
            for k, layer in enumerate(rl.model.base_model.model.bert.encoder.layer)]
        try:
            return rl.memory(batch=batch).activations, seen
        finally:
            for hook in hooks:
                hook.remove()

    full, seen_full = saved(lambda rl: None)
    frozen, seen_frozen = saved(lambda rl: rl.freeze([0, 1]))
    zero, _ = saved(lambda rl: rl.set_group_ranks([0, 0, 8, 8]))
    assert all(seen_full.values())
    assert seen_frozen == {0: False, 1: False, 2: True, 3: True}
    assert 0 < frozen < 0.75 * full
    assert frozen == zero  # the frozen factors' own forward below saves nothing either

    top, _ = saved(lambda rl: rl.freeze([2, 3]))  # frozen on top: backward still runs through them
    assert top > frozen


def test_memory_reports_frozen_adapter_bytes(batch):
    rl, optimizer = _trained(batch=batch)
    before = rl.memory(optimizer=optimizer, batch=batch)
    assert before.frozen_adapter == 0
    rl.freeze(1, optimizer=optimizer)
    after = rl.memory(optimizer=optimizer, batch=batch)
    factor_bytes = sum(p.nbytes for name in rl.group_modules(1) for p in _factors(rl, name))
    assert after.frozen_adapter == factor_bytes
    assert after.frozen_parameters == before.frozen_parameters  # still the base model (+ buffers) alone
    assert after.trainable_parameters == before.trainable_parameters - factor_bytes
    assert after.gradients == after.trainable_parameters
    assert after.optimizer_state < before.optimizer_state
    assert after.total == (after.trainable_parameters + after.frozen_parameters + after.frozen_adapter
                           + after.gradients + after.optimizer_state + after.activations)
    assert after.adapter_total == after.total - after.frozen_parameters
    assert after.to_dict()["frozen_adapter"] == factor_bytes
    assert "frozen adapter" in after.summary()


def test_frozen_adapter_exports_to_vanilla_peft(tmp_path, batch):
    rl, optimizer = _trained(batch=batch)
    rl.freeze(0, optimizer=optimizer)
    rl.resize({rl.group_modules(1)[0]: 0}, optimizer=optimizer)
    _train(rl, optimizer, batch, steps=1)
    rl.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(make_tiny_bert(), str(tmp_path)).eval()
    with torch.no_grad():
        theirs = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(theirs, _logits(rl, batch))


def test_resize_of_frozen_modules_keeps_them_frozen(batch):
    rl, optimizer = _trained(batch=batch)
    bottom = rl.group_modules(0)
    rl.freeze(0, optimizer=optimizer)
    before = _logits(rl, batch)
    name = bottom[0]
    product = lambda: (rl.scaling(name) * _factors(rl, name)[1] @ _factors(rl, name)[0]).detach().double()  # noqa: E731
    delta = product()

    rl.set_group_ranks([7, 4], optimizer=optimizer)  # grow: zero new B columns, function unchanged
    torch.testing.assert_close(_logits(rl, batch), before, rtol=0, atol=1e-6)
    assert rl.frozen == set(bottom) and rl.frozen_groups == [True, False]
    for n in bottom:
        assert all(not p.requires_grad and p.shape[0 if p is _factors(rl, n)[0] else 1] == 7 for p in _factors(rl, n))
    assert _optimized(optimizer) == {id(p) for p in rl.trainable_parameters()}

    rl.set_group_ranks([2, 4], optimizer=optimizer)  # shrink: Eckart-Young, still frozen
    u, s, vh = torch.linalg.svd(delta)
    torch.testing.assert_close(product(), (u[:, :2] * s[:2]) @ vh[:2], rtol=0, atol=1e-5)
    assert rl.frozen == set(bottom)
    assert all(not p.requires_grad for n in bottom for p in _factors(rl, n))
    assert _optimized(optimizer) == {id(p) for p in rl.trainable_parameters()}
    snapshots = [p.detach().clone() for n in bottom for p in _factors(rl, n)]
    _train(rl, optimizer, batch, steps=1)
    assert all(torch.equal(p, s) for p, s in zip([p for n in bottom for p in _factors(rl, n)], snapshots,
                                                       strict=True))

    rl.resize({name: 0}, optimizer=optimizer)  # rank 0 drops it: no longer frozen
    assert name not in rl.frozen and rl.frozen == set(bottom[1:])
    rl.resize({name: 3}, optimizer=optimizer)  # growth from 0: a fresh, trainable adapter
    assert name not in rl.frozen and not rl.group_frozen(0)
    assert all(p.requires_grad and id(p) in _optimized(optimizer) for p in _factors(rl, name))
    assert _optimized(optimizer) == {id(p) for p in rl.trainable_parameters()}


def test_detach_and_regrowth_elsewhere_leave_frozen_modules_frozen(batch):
    rl, optimizer = _trained(batch=batch)
    rl.freeze(0, optimizer=optimizer)
    rl.set_group_ranks([4, 0], optimizer=optimizer)
    rl.set_group_ranks([4, 4], optimizer=optimizer)  # PEFT injects new layers: the frozen ones stay frozen
    assert all(not p.requires_grad for n in rl.group_modules(0) for p in _factors(rl, n))
    assert all(p.requires_grad for n in rl.group_modules(1) for p in _factors(rl, n))
    assert _optimized(optimizer) == {id(p) for p in rl.trainable_parameters()}


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("targets", [
    "bert.encoder.layer.9.attention.self.query",
    ["bert.encoder.layer.0.attention.self.query", "nope"],
    2, -1, [0, 5], True, 1.5, None, [0, 1.0],
])
def test_bad_targets_change_nothing(batch, targets):
    rl, optimizer = _trained(batch=batch)
    rl.freeze(1, optimizer=optimizer)
    params = [(p, p.requires_grad) for p in rl.model.parameters()]
    groups = [list(g["params"]) for g in optimizer.param_groups]
    state = dict(optimizer.state)
    for action in (rl.freeze, rl.thaw):
        with pytest.raises(RankedLoRAError):
            action(targets, optimizer=optimizer)
    assert rl.frozen == set(rl.group_modules(1))
    assert all(p.requires_grad == flag for p, flag in params)
    assert [list(g["params"]) for g in optimizer.param_groups] == groups
    assert dict(optimizer.state) == state


def test_naming_a_rank_zero_module_is_refused(batch):
    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    name = rl.group_modules(0)[0]
    rl.resize({name: 0})
    for action in ("freeze", "thaw"):
        with pytest.raises(RankedLoRAError, match=f"nothing to {action}: it has no adapter"):
            getattr(rl, action)([rl.group_modules(1)[0], name])
    assert rl.frozen == set() and all(p.requires_grad for p in rl.trainable_parameters())


def test_bad_optimizer_changes_nothing(batch):
    rl = RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)
    with pytest.raises(TypeError):
        rl.freeze(0, optimizer=object())
    assert rl.frozen == set() and all(p.requires_grad for n in rl.ranks for p in _factors(rl, n))
