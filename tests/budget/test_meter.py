import pytest
import torch

from rankrl.budget import MemoryBudget
from tests.signals.helpers import attach, make_batch, train_steps

BUDGET = 64 * 2**20


@pytest.fixture
def trained(rl, optimizer):
    train_steps(rl, optimizer, 2)
    return rl, optimizer


@pytest.mark.parametrize("with_batch", [False, True])
def test_headroom_decreases_when_ranks_grow(trained, with_batch):
    rl, optimizer = trained
    budget = MemoryBudget(rl, BUDGET)
    batch = make_batch(7) if with_batch else None
    headrooms = []
    for ranks in ([4, 4], [8, 4], [8, 8], [16, 12]):
        rl.set_group_ranks(ranks, optimizer)
        status = budget.read(optimizer, batch)
        headrooms.append(status.headroom)
        assert status.headroom == BUDGET - status.used
        assert status.used_frac == pytest.approx(status.used / BUDGET)
    assert headrooms == sorted(headrooms, reverse=True) and len(set(headrooms)) == 4


@pytest.mark.parametrize("split_by_kind", [False, True])
def test_predictions_match_measured_memory_exactly(split_by_kind):
    rl = attach(rank=4, num_groups=2, split_by_kind=split_by_kind)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
    train_steps(rl, optimizer, 2)
    budget = MemoryBudget(rl, BUDGET)
    batch = make_batch(50)
    G = rl.num_groups
    targets = [[5] * G, [1] * G, [0] + [4] * (G - 1), [3] * G, [0] * G, [2] * (G - 1) + [7], [3] + [0] * (G - 1)]
    budget.read(optimizer, batch)
    for target in targets:
        predicted = budget.predict_used(target)
        rl.set_group_ranks(target, optimizer)
        assert budget.read(optimizer, batch).used == predicted, target


def test_group_step_costs_are_what_the_step_measures(trained):
    rl, optimizer = trained
    batch = make_batch(9)
    budget = MemoryBudget(rl, BUDGET, step=2)
    rl.set_group_ranks([2, 0], optimizer)
    start = budget.read(optimizer, batch)
    assert all(c > 0 for c in start.grow_cost) and all(f > 0 for f in start.shrink_free[:1])
    assert start.shrink_free[1] == 0  # nothing to free at rank 0
    for g, ranks in ((0, [4, 0]), (1, [2, 2])):
        rl.set_group_ranks(ranks, optimizer)
        assert budget.read(optimizer, batch).used - start.used == start.grow_cost[g]
        rl.set_group_ranks([2, 0], optimizer)
    rl.set_group_ranks([0, 0], optimizer)
    assert start.used - budget.read(optimizer, batch).used == start.shrink_free[0]


def test_would_fit_is_a_hard_wall(trained):
    rl, optimizer = trained
    batch = make_batch(3)
    probe = MemoryBudget(rl, BUDGET).read(optimizer, batch)
    need = probe.used + probe.grow_cost[1]
    budget = MemoryBudget(rl, need)
    budget.read(optimizer, batch)
    assert budget.would_fit([4, 5]) and budget.would_fit([4, 4]) and budget.would_fit([3, 5])
    assert not budget.would_fit([5, 5])
    tight = MemoryBudget(rl, need - 1)
    tight.read(optimizer, batch)
    assert not tight.would_fit([4, 5]) and tight.would_fit([4, 4])
    assert tight.last.to_dict()["group1/grow_fits"] == 0.0
    assert budget.last.to_dict()["group1/grow_fits"] == 1.0


def test_dropout_crossings_err_on_the_safe_side():
    rl = attach(rank=4, lora_dropout=0.1)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
    train_steps(rl, optimizer, 2)
    budget = MemoryBudget(rl, BUDGET)
    batch = make_batch(4)
    budget.read(optimizer, batch)
    for target in ([0, 4], [3, 4], [3, 0], [0, 0], [2, 5]):
        predicted = budget.predict_used(target)
        rl.set_group_ranks(target, optimizer)
        assert predicted >= budget.read(optimizer, batch).used, target


def test_used_counts_gradients_and_state_that_are_not_held(rl):
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
    budget = MemoryBudget(rl, BUDGET)
    before_any_step = budget.read(optimizer)  # no grads, no optimizer state: all derived
    rl.model(**make_batch(0)).loss.backward()
    optimizer.step()
    held = budget.read(optimizer)  # grads and state measured
    optimizer.zero_grad()
    after_zero = budget.read(optimizer)
    assert held.derived == 0
    assert after_zero.used == held.used == before_any_step.used  # the AdamW fallback figures are exact
    assert after_zero.derived == held.report.gradients
    assert budget.state_figures(optimizer) == (2.0, 4.0)  # AdamW: two moments, a float32 step


def test_state_factor_is_measured_from_the_optimizer(trained):
    rl, _ = trained
    sgd = torch.optim.SGD(rl.trainable_parameters(), lr=0.1, momentum=0.9)
    assert MemoryBudget(rl, BUDGET).state_figures(sgd) == (2.0, 4.0)  # AdamW fallback before any step
    budget = MemoryBudget(rl, BUDGET, state_factor=3.0, state_scalar=0.0)
    assert budget.state_figures(sgd) == (3.0, 0.0)  # nothing to measure before a step
    rl.model(**make_batch(0)).loss.backward()
    sgd.step()
    assert budget.state_figures(sgd) == (1.0, 0.0)
    assert budget.state_figures(None) == (3.0, 0.0)


def test_adapter_scope_leaves_the_frozen_base_out(trained):
    rl, optimizer = trained
    total = MemoryBudget(rl, BUDGET).read(optimizer)
    adapter = MemoryBudget(rl, BUDGET, scope="adapter").read(optimizer)
    assert total.used - adapter.used == total.report.frozen_parameters
    features = adapter.to_dict()
    expected = {"memory/used_frac", "memory/headroom_frac", "group0/grow_cost_frac", "group1/shrink_free_frac"}
    assert expected <= set(features)


@pytest.mark.parametrize("split_by_kind", [False, True])
def test_kept_batch_figure_is_the_measured_one_at_every_configuration(split_by_kind):
    rl = attach(rank=4, num_groups=2, split_by_kind=split_by_kind)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
    train_steps(rl, optimizer, 1)
    batch = make_batch(11)
    budget = MemoryBudget(rl, BUDGET)
    budget.read(optimizer, batch)
    G = rl.num_groups
    # Same live set at other ranks (derived from one measured pass), new live sets, and back again (cached).
    for target in ([4] * G, [7] * G, [1] + [6] * (G - 1), [0] + [4] * (G - 1), [3] * (G - 1) + [0], [4] * G):
        rl.set_group_ranks(target, optimizer)
        figure = budget.measure_kept_batch()
        assert rl.activations_measured
        assert figure == rl.measure_step(batch)[0], target
        assert budget.read(optimizer).report.activations == figure


def test_kept_batch_needs_a_read_with_a_batch(rl):
    with pytest.raises(ValueError, match="read\\(optimizer, batch\\) first"):
        MemoryBudget(rl, BUDGET).measure_kept_batch()


def test_predictions_with_frozen_modules_match_measured_memory_exactly():
    """Frozen factors cost their bytes only (no gradient, state or saved input), and the budget sees a freeze."""
    rl = attach(rank=4, num_groups=2)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
    train_steps(rl, optimizer, 2)
    budget = MemoryBudget(rl, BUDGET)
    batch = make_batch(50)
    before = budget.read(optimizer, batch).used
    rl.freeze(1, optimizer=optimizer)
    predicted = budget.predict_used([4, 4])  # a reading taken before a freeze is not reused
    assert predicted == budget.read(optimizer, batch).used < before
    for target in ([4, 7], [4, 2], [6, 2], [6, 0], [6, 3], [0, 3], [2, 3]):
        predicted = budget.predict_used(target)
        rl.set_group_ranks(target, optimizer)
        assert budget.read(optimizer, batch).used == predicted, target
    assert rl.frozen == set()  # group 1 went through rank 0: its regrown adapter trains
    rl.freeze(0, optimizer=optimizer)
    for target in ([4, 3], [0, 3]):
        predicted = budget.predict_used(target)
        rl.set_group_ranks(target, optimizer)
        assert budget.read(optimizer, batch).used == predicted, target
