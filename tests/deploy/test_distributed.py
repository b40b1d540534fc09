"""Data-parallel fine-tuning with a controller: 2 CPU processes under ``torchrun`` (gloo) resize as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 400
TOLERANCE = 1e-4
"""Largest difference between a parameter trained by 2 processes on half batches and by one process on the
whole batch: the same mean gradient, summed in another order (float32 rounding, amplified by Adam)."""


FINETUNE = ["-m", "rankrl.cli", "finetune", "--model", "tiny", "--data", "synthetic:keyword?n_train=128&n_eval=48"]
"""``rankrl finetune`` on the tiny model and a small synthetic task, as ``torchrun`` arguments."""


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_two_processes_resize_identically_and_match_one_process(tmp_path):
    result = torchrun(str(WORKER), "loop", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    single = subprocess.run(
        [sys.executable, str(WORKER), "loop", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert single.returncode == 0, single.stderr[-3000:]
    a, b, one = (torch.load(tmp_path / name) for name in ("rank0.pt", "rank1.pt", "single.pt"))
    # Resizes (shrink and grow, a group to rank 0, regrowth from 0) and a freeze; DDP rebuilt after each.
    expected = [([4, 4], [False, False]), ([2, 6], [False, False]), ([0, 8], [False, False]),
                ([6, 2], [False, False]), ([6, 2], [True, False]), ([6, 4], [True, False])]
    assert a["decisions"] == b["decisions"] == one["decisions"] == expected
    assert a["frozen"] == b["frozen"] == one["frozen"] == [True, False]
    assert a["rebuilds"] == b["rebuilds"] == 5
    # Signals: every process decides on the mean of the processes' readings (the losses differ by shard).
    assert a["reduced"] == b["reduced"] and a["local"]["loss/ema_rel"] != b["local"]["loss/ema_rel"]
    for key, value in a["reduced"].items():
        assert value == pytest.approx((a["local"][key] + b["local"][key]) / 2, rel=1e-6, abs=1e-9), key
    assert a["params"].keys() == b["params"].keys() == one["params"].keys()
    for name, value in a["params"].items():
        assert torch.equal(value, b["params"][name]), name
        assert (value - one["params"][name]).abs().max().item() < TOLERANCE, name


def test_hf_trainer_under_torchrun(tmp_path):
    result = torchrun(str(WORKER), "trainer", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    # The Trainer's log history holds the decisions at steps 3..15 (the one at step 0 precedes training).
    assert [ranks for ranks, _ in a["decisions"]] == [[2, 6], [0, 8], [6, 2], [6, 2], [6, 4]]
    assert a["decisions"] == b["decisions"]
    assert a["ranks"] == b["ranks"] == [6, 4] and a["frozen"] == b["frozen"] == [True, False]
    assert a["rebuilds"] == b["rebuilds"] == 5
    assert all(torch.equal(value, b["params"][name]) for name, value in a["params"].items())
    # One process writes: one decision log line per decision, one adapter.
    log = tmp_path / "trainer" / "rankrl" / "decisions.jsonl"
    assert len(log.read_text().splitlines()) == 6  # step 0 included
    assert (tmp_path / "trainer" / "adapter" / "adapter_config.json").exists()


def test_processes_that_disagree_on_the_settings_fail_at_once(tmp_path):
    started = time.monotonic()
    result = torchrun(str(WORKER), "mismatch", str(tmp_path), cwd=tmp_path)
    assert result.returncode != 0
    message = ("error: The 2 torchrun processes disagree on the rank controller's settings "
               "(every: rank 0=3, rank 1=4)")
    assert result.stderr.count(message) == 2, result.stderr[-3000:]  # one clear error from each process
    assert not list(tmp_path.glob("*.pt"))
    assert time.monotonic() - started < TIMEOUT


def test_rankrl_finetune_under_torchrun(tmp_path):
    out = tmp_path / "run"
    result = torchrun(
        *FINETUNE,
        "--eval-size",
        "48",
        "--steps",
        "12",
        "--every",
        "3",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--rank",
        "4",
        "--num-groups",
        "2",
        "--controller",
        "importance",
        "--out",
        str(out),
        "--no-progress",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 12 and metrics["decisions"] == 5
    assert json.loads((out / "config.json").read_text())["processes"] == 2
    assert len((out / "decisions.jsonl").read_text().splitlines()) == 5  # written once, by rank 0
    assert (out / "adapter" / "adapter_config.json").exists()
    assert result.stdout.count("rankrl finetune tiny") == 1

    odd = torchrun(
        *FINETUNE,
        "--batch-size",
        "7",
        "--steps",
        "2",
        "--num-groups",
        "2",
        "--out",
        str(tmp_path / "odd"),
        "--no-progress",
        cwd=tmp_path,
    )
    assert odd.returncode != 0 and "--batch-size 7 is the global batch and must split evenly" in odd.stderr
    assert not (tmp_path / "odd").exists()


@pytest.fixture
def one_process_group():
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_sync_in_one_process(one_process_group, tiny_bert, batch):
    """The collective steps are identities in a group of one: signals, decisions and DDP identity survive."""
    from rankrl.controllers import make_controller
    from rankrl.deploy import RankControl
    from rankrl.deploy.distributed import DataParallelSync
    from rankrl.lora import RankedLoRA

    rl = RankedLoRA.attach(tiny_bert, rank=4, num_groups=2)
    ddp = torch.nn.parallel.DistributedDataParallel(rl.model)
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-3)
    control = RankControl(rl, make_controller("fixed:2"), every=1, r_max=8, rank_step=2)
    sync = DataParallelSync(track=[lambda: ddp, "not a model"]).attach(control)
    reducer = ddp.reducer
    control.setup(optimizer, batch)  # the first decision, at step 0, shrinks to fixed rank 2
    assert rl.group_ranks == [2, 2] and sync.rebuilds == 1
    assert ddp.reducer is not reducer  # the same DDP object, with a new reducer
    signals = control.reader.read()
    reduced = sync.reduce_signals(signals)
    assert reduced.to_dict() == pytest.approx(signals.to_dict())
    assert sync.from_main({"ranks": [1, 2]}) == {"ranks": [1, 2]}
    ddp(**batch).loss.backward()
    optimizer.step()
    applied = control.step(1, 0.5, optimizer)
    assert applied.ranks == [2, 2] and not applied.changed and sync.rebuilds == 1
    assert ddp.module is rl.model
    ddp(**batch).loss.backward()  # the rebuilt wrapper trains the new parameters
    assert all(p.grad is not None for p in rl.trainable_parameters())
