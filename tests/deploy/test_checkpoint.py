"""The controller's checkpoint files: a round trip, whole-or-absent writes, and the fall-backs on resume."""

from __future__ import annotations

import pytest
import torch

from rankrl import RankedLoRA
from rankrl.deploy.checkpoint import (
    CONTROL_FILE,
    SIGNALS_FILE,
    CheckpointError,
    align_optimizer,
    optimizer_param_names,
    read_control_state,
    read_signal_state,
    restore_ranks_from_checkpoint,
    save_control_state,
)
from tests.conftest import make_batch, make_tiny_bert


def attach() -> RankedLoRA:
    return RankedLoRA.attach(make_tiny_bert(), rank=4, num_groups=2)


def test_control_and_signal_state_round_trip(tmp_path):
    state = {"module_ranks": {"a": 4, "b": 0}, "frozen": [], "controller": {"beta": 1.5}}
    signals = {"values": {"loss": [0.5, 0.25]}, "tensors": {"importance/a": torch.arange(6.0).reshape(2, 3).T}}
    path = save_control_state(tmp_path / "checkpoint-3", state, signals=signals)
    assert path == tmp_path / "checkpoint-3" / CONTROL_FILE
    loaded = read_control_state(path.parent)
    assert loaded == {**state, "signals": {"loss": [0.5, 0.25]}}
    restored = read_signal_state(path.parent, loaded)
    assert restored["values"] == {"loss": [0.5, 0.25]}
    torch.testing.assert_close(restored["tensors"]["importance/a"], torch.arange(6.0).reshape(2, 3).T)
    assert sorted(p.name for p in path.parent.iterdir()) == [CONTROL_FILE, SIGNALS_FILE]  # no temporary left


def test_a_checkpoint_without_control_or_signal_files_reads_as_none(tmp_path):
    assert read_control_state(tmp_path) is None
    assert read_signal_state(tmp_path, {"module_ranks": {}}) is None
    save_control_state(tmp_path, {"module_ranks": {}})
    assert read_signal_state(tmp_path, read_control_state(tmp_path)) is None  # written without signals


def test_a_write_killed_halfway_leaves_the_previous_files_whole(tmp_path, monkeypatch):
    import safetensors.torch

    first = {"values": {"loss": [1.0]}, "tensors": {"t": torch.ones(3)}}
    save_control_state(tmp_path, {"module_ranks": {"a": 2}}, signals=first)

    def half_then_fail(tensors, filename):
        with open(filename, "wb") as handle:
            handle.write(b"half a safetensors file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_control_state(tmp_path, {"module_ranks": {"a": 4}},
                           signals={"values": {"loss": [2.0]}, "tensors": {"t": torch.zeros(3)}})
    monkeypatch.undo()
    state = read_control_state(tmp_path)
    assert state == {"module_ranks": {"a": 2}, "signals": {"loss": [1.0]}}
    torch.testing.assert_close(read_signal_state(tmp_path, state)["tensors"]["t"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONTROL_FILE, SIGNALS_FILE]  # the temporary is gone


def test_damaged_files_are_a_checkpoint_error(tmp_path):
    (tmp_path / CONTROL_FILE).write_text('{"module_ranks": ')
    with pytest.raises(CheckpointError, match="is corrupt"):
        read_control_state(tmp_path)
    (tmp_path / SIGNALS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="is corrupt"):
        read_signal_state(tmp_path, {"signals": {}})


def test_restore_resizes_and_refreezes_from_the_control_file(tmp_path):
    rl = attach()
    names = sorted(rl.ranks)
    ranks = {name: (8 if i % 2 else 0) for i, name in enumerate(names)}
    frozen = [names[1]]
    save_control_state(tmp_path, {"module_ranks": ranks, "frozen": frozen})
    fresh = attach()
    assert restore_ranks_from_checkpoint(fresh, tmp_path) == ranks
    assert fresh.frozen == set(frozen)


def test_restore_falls_back_to_the_adapter_config(tmp_path):
    rl = attach()
    names = sorted(rl.ranks)
    rl.resize({names[0]: 0, names[1]: 2})
    rl.save_pretrained(tmp_path)
    assert not (tmp_path / CONTROL_FILE).exists()
    assert restore_ranks_from_checkpoint(attach(), tmp_path) == rl.ranks


def test_restore_refuses_another_model_or_no_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint directory"):
        restore_ranks_from_checkpoint(attach(), tmp_path / "missing")
    with pytest.raises(CheckpointError, match="neither"):
        restore_ranks_from_checkpoint(attach(), tmp_path)
    save_control_state(tmp_path, {"module_ranks": {"other.layer": 4}})
    with pytest.raises(CheckpointError, match="of another model"):
        restore_ranks_from_checkpoint(attach(), tmp_path)
    rl = attach()
    name = sorted(rl.ranks)[0]
    save_control_state(tmp_path, {"module_ranks": {**rl.ranks, name: 0}, "frozen": [name]})
    with pytest.raises(CheckpointError, match="freezes modules it has at rank 0"):
        restore_ranks_from_checkpoint(rl, tmp_path)


def test_align_optimizer_moves_each_state_to_its_parameter():
    rl = attach()
    model = rl.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    model(**make_batch()).loss.backward()
    optimizer.step()
    saved = optimizer_param_names(optimizer, model)
    by_name = {n: optimizer.state[p]["exp_avg"].clone() for n, p in model.named_parameters() if p in optimizer.state}
    # The same optimizer state loaded by position into an optimizer whose parameters come in reverse order.
    reordered = torch.optim.Adam(list(reversed(params)), lr=1e-3)
    reordered.load_state_dict(optimizer.state_dict())  # pairs by position: every state on the wrong parameter
    assert align_optimizer(reordered, model, saved) is True
    named = dict(model.named_parameters())
    for name, expected in by_name.items():
        torch.testing.assert_close(reordered.state[named[name]]["exp_avg"], expected)
    assert optimizer_param_names(reordered, model) == saved
    assert align_optimizer(reordered, model, saved) is False  # already in the saved order


def test_align_optimizer_refuses_other_parameters():
    rl = attach()
    params = [p for p in rl.model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params[1:], lr=1e-3)
    saved = optimizer_param_names(torch.optim.Adam(params, lr=1e-3), rl.model)
    with pytest.raises(CheckpointError, match="parameter groups differ"):
        align_optimizer(optimizer, rl.model, saved)
