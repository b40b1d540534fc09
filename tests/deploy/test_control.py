"""``RankControl`` in a hand-written PyTorch loop: decisions every N steps, the wall, the log, the adapter."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from peft import PeftModel

from rankrl.budget import BudgetTrace, LiveBudget, WallError
from rankrl.controllers import BudgetTooSmallError, Decision, DecisionLog, RankController, make_controller
from rankrl.controllers.base import MIB
from rankrl.controllers.static import FixedController
from rankrl.deploy import RankControl
from rankrl.models import load_model
from rankrl.session import FineTuneSession

from .conftest import TINY

EVERY, STEPS = 4, 24


@pytest.fixture(scope="module")
def session() -> FineTuneSession:
    return FineTuneSession(TINY)


def start_memory(session: FineTuneSession) -> float:
    """MiB measured at the start (scope total), as RankControl measures it."""
    probe = RankControl(session.rl, make_controller("fixed"), every=1, r_max=8, rank_step=2)
    try:
        return probe.memory.read(session.optimizer, session.train_batch(0)).used / MIB
    finally:
        probe.close()


def hand_loop(session: FineTuneSession, control: RankControl, steps: int = STEPS) -> list:
    """The loop of the RankControl docstring, written out by hand (no FineTuneSession.train)."""
    model, optimizer = session.rl.model, session.optimizer
    control.setup(optimizer, session.train_batch(0))
    model.train()
    applied = []
    for step in range(1, steps + 1):
        loss = model(**session.train_batch(step - 1)).loss
        loss.backward()
        control.after_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        applied.append(control.step(step, loss.item(), optimizer))
    return applied


@pytest.mark.parametrize("spec", ["fixed:2", "importance", "greedy-memory"])
def test_plain_loop_decides_every_n_within_the_wall(session, tmp_path, spec):
    session.reset(seed=0)
    budget = start_memory(session) + 0.2 if spec == "greedy-memory" else None
    control = RankControl(session.rl, make_controller(spec), every=EVERY, budget_mb=budget, total_steps=STEPS,
                          log_dir=tmp_path, r_max=8, rank_step=2, spec=spec)
    try:
        applied = hand_loop(session, control)
    finally:
        control.close()
    decided = [step for step, a in enumerate(applied, start=1) if a is not None]
    assert decided == list(range(EVERY, STEPS + 1, EVERY))
    records = DecisionLog.read(tmp_path)
    assert [r["step"] for r in records] == [0, *decided] and control.decisions == len(records)  # 0: before step 1
    assert records[-1]["ranks_after"] == session.rl.group_ranks
    assert any(r["ranks_after"] != r["ranks_before"] for r in records), "the controller never changed a rank"
    assert all(r["memory_after_measured"] for r in records)
    if spec == "fixed:2":
        assert records[0]["ranks_after"] == [2, 2] and all(r["ranks_after"] == [2, 2] for r in records)
    if spec == "importance":
        assert sum(records[-1]["ranks_after"]) < sum(records[0]["ranks_before"])  # the cubic schedule shrinks
    if budget is not None:
        assert records[-1]["budget"] == int(budget * MIB)
        assert all(r["memory_after"] <= r["budget"] for r in records)
        assert control.peak_used <= int(budget * MIB)
        assert sum(records[-1]["ranks_after"]) > 8  # greedy filled the headroom
    assert (tmp_path / "tb").is_dir() and any((tmp_path / "tb").iterdir())


class _Peeking(FixedController):
    """``fixed:2`` that draws from torch's generator at every decision, as a rule's what-if passes do."""

    def decide(self, ctx):
        torch.rand(1000)
        return super().decide(ctx)


def test_what_a_controller_draws_does_not_change_the_training(tmp_path):
    session = FineTuneSession(dataclasses.replace(TINY, lora_dropout=0.3))  # dropout reads torch's generator
    runs = {}
    for name, controller in [("plain", FixedController(2)), ("peeking", _Peeking(2))]:
        session.reset(seed=0)
        control = RankControl(session.rl, controller, every=EVERY, total_steps=STEPS, r_max=8, rank_step=2)
        try:
            hand_loop(session, control, steps=12)
        finally:
            control.close()
        runs[name] = torch.rand(3).tolist()  # the stream the training left behind
        assert session.rl.group_ranks == [2, 2]
        runs[name].append(session.evaluate().accuracy)
        runs[name].append([p.detach().clone() for p in session.rl.trainable_parameters()])
    plain, peeking = runs["plain"], runs["peeking"]
    assert plain[:4] == peeking[:4]
    assert all(torch.equal(a, b) for a, b in zip(plain[4], peeking[4], strict=True))


def test_too_small_budget_fails_at_setup_before_training(session, tmp_path):
    session.reset(seed=0)
    control = RankControl(session.rl, make_controller("greedy-memory"), every=EVERY, budget_mb=1.0,
                          log_dir=tmp_path / "logs", r_max=8, rank_step=2)
    weights = [p.detach().clone() for p in session.rl.trainable_parameters()]
    try:
        with pytest.raises(BudgetTooSmallError, match=r"budget \(1\.00 MiB.*Raise the budget to at least"):
            control.setup(session.optimizer, session.train_batch(0))
        with pytest.raises(RuntimeError, match="setup"):
            control.step(1, 0.5)
    finally:
        control.close()
    assert all(torch.equal(a, b) for a, b in zip(weights, session.rl.trainable_parameters(), strict=True))
    assert not (tmp_path / "logs").exists()


def test_start_above_the_budget_is_fitted_before_the_first_step(session):
    session.reset(seed=0)
    budget = start_memory(session) - 0.02
    control = RankControl(session.rl, make_controller("importance"), every=EVERY, budget_mb=budget,
                          total_steps=STEPS, r_max=8, rank_step=2)
    try:
        control.setup(session.optimizer, session.train_batch(0))
        assert control.start_fit is not None and control.start_fit == session.rl.group_ranks
        assert sum(control.start_fit) < 8 and control.last_used <= control.budget.budget
    finally:
        control.close()


def test_vanilla_peft_reproduces_the_final_logits(tmp_path):
    session = FineTuneSession(dataclasses.replace(TINY, split_by_kind=True))
    control = RankControl(session.rl, make_controller("layerwise:0,2,6,4"), every=EVERY, total_steps=12,
                          r_max=8, rank_step=2)
    try:
        hand_loop(session, control, steps=12)
        adapter = control.finish(tmp_path / "adapter")
    finally:
        control.close()
    assert session.rl.group_ranks == [0, 2, 6, 4]
    config = session.rl.model.peft_config["default"]
    assert config.exclude_modules and config.rank_pattern  # a rank-0 group and mixed ranks, both exported
    base = load_model("tiny", num_labels=2).model
    loaded = PeftModel.from_pretrained(base, str(adapter)).eval()
    batch = session.train_batch(3)
    batch.pop("labels")
    session.rl.model.eval()
    with torch.no_grad():
        diff = (loaded(**batch).logits - session.rl.model(**batch).logits).abs().max().item()
    assert diff <= 1e-6


def test_without_a_budget_memory_features_are_fractions_of_the_start(session, tmp_path):
    """No wall, but a learned policy must still see used/reference near 1 at the start, as in the env."""
    session.reset(seed=0)
    control = RankControl(session.rl, make_controller("fixed"), every=EVERY, total_steps=STEPS, log_dir=tmp_path,
                          r_max=8, rank_step=2)
    try:
        hand_loop(session, control, steps=EVERY)
    finally:
        control.close()
    record = DecisionLog.read(tmp_path / "decisions.jsonl")[0]
    assert record["budget"] is None
    assert record["observation"]["memory/used_frac"] == pytest.approx(1.0, abs=0.05)


def test_tensorboard_scalars_are_queued_and_all_written(session, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    session.reset(seed=0)
    control = RankControl(session.rl, make_controller("fixed"), every=EVERY, total_steps=10, log_dir=tmp_path,
                          r_max=8, rank_step=2)
    try:
        hand_loop(session, control, steps=10)  # decisions at 4 and 8; steps 9 and 10 are still queued
        assert [step for _, _, step in control._pending_scalars] == [9, 10]
    finally:
        control.close()
    assert not control._pending_scalars
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 11))
    assert [e.step for e in events.Scalars("rank/group0")] == [0, 4, 8]


def test_relative_wall_is_a_fraction_of_the_start_memory(session, tmp_path):
    """budget_frac sets the wall the environment trains behind: a fraction of the memory measured at set-up."""
    session.reset(seed=0)
    start = start_memory(session)
    control = RankControl(session.rl, make_controller("greedy-memory"), every=EVERY, budget_frac=1.0,
                          total_steps=STEPS, log_dir=tmp_path, r_max=8, rank_step=2)
    try:
        hand_loop(session, control)
    finally:
        control.close()
    records = DecisionLog.read(tmp_path)
    assert control.budget is not None and control.budget.budget == int(start * MIB)
    assert all(r["budget"] == int(start * MIB) and r["memory_after"] <= r["budget"] for r in records)
    assert control.peak_used == int(start * MIB)  # greedy stays at the wall: the start memory is its peak


def test_one_budget_at_a_time(session):
    with pytest.raises(ValueError, match="Give one budget, not budget_mb and budget_frac"):
        RankControl(session.rl, make_controller("fixed"), every=EVERY, budget_mb=100.0, budget_frac=0.5)
    with pytest.raises(ValueError, match="budget_frac"):
        RankControl(session.rl, make_controller("fixed"), every=EVERY, budget_frac=0.0)


class ShrinkLater(RankController):
    """Holds the starting ranks at the first decisions, then asks for 2 in every group from step ``at`` on."""

    name = "shrink-later"

    def __init__(self, at: int) -> None:
        self.at = at

    def decide(self, ctx):
        return Decision([2] * ctx.num_groups if ctx.step >= self.at else list(ctx.group_ranks), "test")


def test_mean_memory_weights_each_allocation_by_its_steps(session):
    """Ranks 4,4 for 4 steps, then 2,2 for the next 8: the mean is the step-weighted average of the two."""
    session.reset(seed=0)
    control = RankControl(session.rl, ShrinkLater(EVERY), every=EVERY, total_steps=12, r_max=8, rank_step=2)
    try:
        hand_loop(session, control, steps=12)
        start, after = control.peak_used, control.last_used
    finally:
        control.close()
    assert after < start
    assert control.mean_used == pytest.approx((4 * start + 8 * after) / 12)
    state = control.state_dict()
    assert state["memory_steps"] == 12 and state["memory_sum"] == 4 * start + 8 * after


def test_resume_keeps_the_memory_reference_of_the_start(session):
    """A resumed run measures its features against the start memory, not against the ranks it resumes at."""
    session.reset(seed=0)
    first = RankControl(session.rl, make_controller("fixed:2"), every=EVERY, budget_frac=1.0, total_steps=12,
                        r_max=8, rank_step=2)
    try:
        hand_loop(session, first, steps=EVERY)
        state = first.state_dict()
    finally:
        first.close()
    assert session.rl.group_ranks == [2, 2]
    resumed = RankControl(session.rl, make_controller("fixed:2"), every=EVERY, budget_frac=1.0, total_steps=12,
                          r_max=8, rank_step=2)
    try:
        resumed.load_state_dict(state, optimizer=session.optimizer)
        resumed.setup(session.optimizer, session.train_batch(0))
        assert resumed.budget.budget == first.budget.budget
        assert resumed.mean_used == pytest.approx(first.mean_used)
    finally:
        resumed.close()


def test_frozen_modules_survive_the_control_state(session):
    """state_dict lists the frozen modules; load_state_dict resizes, then freezes exactly those again."""
    session.reset(seed=0)
    rl, optimizer = session.rl, session.optimizer
    rl.freeze(0, optimizer=optimizer)
    control = RankControl(rl, make_controller("fixed"), every=EVERY, r_max=8, rank_step=2)
    try:
        state = control.state_dict()
        assert state["frozen"] == sorted(rl.group_modules(0))
        rl.thaw(0, optimizer=optimizer)
        rl.freeze(1, optimizer=optimizer)
        rl.set_group_ranks([2, 0], optimizer=optimizer)
        control.load_state_dict(state, optimizer=optimizer)
        assert rl.group_ranks == [4, 4] and rl.frozen == set(rl.group_modules(0))
        trained = {id(p) for p in rl.trainable_parameters()}
        assert {id(p) for g in optimizer.param_groups for p in g["params"]} == trained
        corrupt = dict(state, module_ranks={**state["module_ranks"], state["frozen"][0]: 0})
        with pytest.raises(ValueError, match="rank 0"):
            control.load_state_dict(corrupt, optimizer=optimizer)
        assert rl.group_ranks == [4, 4] and rl.frozen == set(rl.group_modules(0))
    finally:
        control.close()


def test_a_budget_that_drops_between_decisions_is_met_before_the_next_step(session, tmp_path):
    """A step-down trace at step 10 (decisions every 4): the wall frees memory at step 10, not at 12."""
    session.reset(seed=0)
    trace = BudgetTrace(((0, 1.0), (10, 0.7)), "frac", "down")
    control = RankControl(session.rl, make_controller("fixed"), every=EVERY, budget_trace=trace, total_steps=16,
                          log_dir=tmp_path, r_max=8, rank_step=2, memory_scope="adapter")
    try:
        hand_loop(session, control, steps=16)
    finally:
        control.close()
    records = DecisionLog.read(tmp_path)
    assert [r["step"] for r in records] == [0, 4, 8, 10, 12, 16]
    drop = records[3]
    assert drop["budget"] == int(0.7 * control.reference) and drop["frozen_after"] == [True, False]
    assert drop["ranks_after"] == drop["ranks_before"] and "frozen or dropped" in drop["reason"]
    assert all(r["memory_after"] <= r["budget"] for r in records)
    assert control.violations == 0 and control.max_over_wall == 0


def test_the_first_decision_meets_a_budget_below_the_start_by_dropping(session, tmp_path):
    session.reset(seed=0)
    control = RankControl(session.rl, make_controller("fixed"), every=EVERY, budget_frac=0.7, total_steps=8,
                          r_max=8, rank_step=2, memory_scope="adapter")
    try:
        hand_loop(session, control, steps=8)
    finally:
        control.close()
    assert session.rl.group_ranks == [0, 4] and not any(session.rl.frozen_groups)  # nothing learned: dropped
    assert control.peak_used <= control.budget.budget < control.reference and control.violations == 0


def test_a_live_budget_is_read_at_each_decision(session):
    session.reset(seed=0)
    readings = iter([10**9, 10**9, 10**9, 0])  # a co-tenant takes everything before the third decision
    live = LiveBudget(free=lambda: next(readings), held=lambda: 0, margin_mb=0)
    control = RankControl(session.rl, make_controller("fixed"), every=EVERY, live_budget=live, total_steps=12,
                          r_max=8, rank_step=2, memory_scope="adapter")
    try:
        with pytest.raises(WallError, match="smallest budget this run fits in"):
            hand_loop(session, control, steps=12)
    finally:
        control.close()
