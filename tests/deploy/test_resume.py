"""``rankrl finetune --resume``: an interrupted run ends where an uninterrupted one would."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from rankrl import interrupt
from rankrl.deploy.finetune import FinetuneConfig, resume_finetune, run_finetune
from rankrl.deploy.resume import ResumeError, list_checkpoints
from rankrl.session import FineTuneSession

QUIET = Console(quiet=True)


def config(out, controller: str = "importance", **overrides) -> FinetuneConfig:
    settings = dict(model="tiny", data="synthetic:keyword?n_train=256&n_eval=64", controller=controller, steps=24,
                    every=4, eval_every=4, eval_size=48, lr=3e-3, batch_size=8, max_length=32, rank=4, num_groups=2,
                    seed=1, out=str(out))
    settings.update(overrides)
    return FinetuneConfig(**settings)


def interrupt_at(monkeypatch, step: int) -> None:
    """Ask the run to stop after optimizer step ``step``, as Ctrl-C would (rankrl.interrupt)."""
    train = FineTuneSession.train

    def stepping(self, steps, measure_every=0):
        result = train(self, steps, measure_every)
        if self.step == step:
            interrupt.request()
        return result

    monkeypatch.setattr(FineTuneSession, "train", stepping)


def outputs(run_dir) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    decisions = [json.loads(line) for line in (run_dir / "decisions.jsonl").read_text().splitlines()]
    return {"metrics": metrics, "decisions": decisions,
            "adapter": load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))}


def assert_same_run(a: dict, b: dict) -> None:
    assert a["metrics"]["group_ranks"] == b["metrics"]["group_ranks"]
    assert a["metrics"]["steps"] == b["metrics"]["steps"] and a["metrics"]["decisions"] == b["metrics"]["decisions"]
    assert a["metrics"]["accuracy"] == pytest.approx(b["metrics"]["accuracy"], abs=1e-9)
    assert a["metrics"]["eval_loss"] == pytest.approx(b["metrics"]["eval_loss"], rel=1e-5)
    for key in ("peak_memory_mib", "mean_memory_mib", "trainable_params", "peak_trainable_params", "wall_hits"):
        assert a["metrics"][key] == b["metrics"][key], key
    assert [d["step"] for d in a["decisions"]] == [d["step"] for d in b["decisions"]]
    assert [d["ranks_after"] for d in a["decisions"]] == [d["ranks_after"] for d in b["decisions"]]
    for x, y in zip(a["decisions"], b["decisions"], strict=True):
        assert x["observation"] == pytest.approx(y["observation"], rel=1e-4, abs=1e-6)
    assert a["adapter"].keys() == b["adapter"].keys()
    for key in a["adapter"]:
        torch.testing.assert_close(a["adapter"][key], b["adapter"][key], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    return {name: outputs(run_finetune(config(root / name, controller), console=QUIET, progress=False))
            for name, controller in (("importance", "importance"), ("variance", "variance"))}


@pytest.mark.parametrize("controller", ["importance", "variance"])
def test_interrupted_then_resumed_ends_where_an_uninterrupted_run_does(reference, tmp_path, monkeypatch, controller):
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 10)
    try:
        with pytest.raises(interrupt.Interrupted, match=f"step 10 of 24.*rankrl finetune --resume {out}"):
            run_finetune(config(out, controller), console=QUIET, progress=False)
    finally:
        interrupt.clear()
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(out)] == ["step_10", "step_8"]
    assert not (out / "metrics.json").exists() and not (out / "adapter").exists()
    resume_finetune(out, console=QUIET, progress=False)
    assert_same_run(outputs(out), reference[controller])
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").glob(".*"))


def test_a_kill_loses_at_most_one_interval_and_a_damaged_checkpoint_falls_back(reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 14)
    try:
        with pytest.raises(interrupt.Interrupted):
            run_finetune(config(out), console=QUIET, progress=False)
    finally:
        interrupt.clear()
    monkeypatch.undo()
    # The newest checkpoint cut short (a disk that lost its tail): the previous one (12, periodic) is used.
    assert [p.name for p in list_checkpoints(out)] == ["step_14", "step_12"]
    newest = out / "checkpoints" / "step_14" / "tensors.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    messages = []
    console = Console(quiet=True)
    console.print = lambda text, *a, **k: messages.append(str(text))
    resume_finetune(out, console=console, progress=False)
    assert any("step_14 is unusable" in m and "previous one" in m for m in messages), messages
    assert any("resuming" in m and "at step 12" in m for m in messages), messages
    assert_same_run(outputs(out), reference["importance"])


def test_resume_refuses_what_it_cannot_continue(tmp_path, reference):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resume_finetune(tmp_path / "nothing", console=QUIET)
    finished = tmp_path / "finished"
    run_finetune(config(finished, "fixed", steps=4), console=QUIET, progress=False)
    with pytest.raises(ValueError, match="has finished"):
        resume_finetune(finished, console=QUIET)
    (finished / "metrics.json").unlink()
    shutil.rmtree(finished / "checkpoints", ignore_errors=True)
    with pytest.raises(ResumeError, match="no checkpoints"):
        resume_finetune(finished, console=QUIET)
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "config.json").write_text(json.dumps({"command": "train"}))
    with pytest.raises(ValueError, match="is a rankrl train run, not a finetune run"):
        resume_finetune(tmp_path / "train", console=QUIET)


def test_resume_reuses_the_memory_meter_s_measured_figures(tmp_path, monkeypatch):
    """From step 16 of this run a crossing the meter measured before the kill recurs: a resumed run that
    measured it again would feed one more pass to the input-variance hooks and drift from the original."""
    reference = outputs(run_finetune(config(tmp_path / "ref", steps=36, seed=0), console=QUIET, progress=False))
    out = tmp_path / "run"
    interrupt_at(monkeypatch, 18)
    try:
        with pytest.raises(interrupt.Interrupted):
            run_finetune(config(out, steps=36, seed=0), console=QUIET, progress=False)
    finally:
        interrupt.clear()
    monkeypatch.undo()
    shutil.rmtree(out / "checkpoints" / "step_18")  # as a SIGKILL at step 18 leaves it: step_16 is the newest
    state = json.loads((out / "checkpoints" / "step_16" / "state.json").read_text())
    assert state["memory_crossings"]["saved"]
    resume_finetune(out, console=QUIET, progress=False)
    assert_same_run(outputs(out), reference)
