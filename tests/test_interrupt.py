"""Ctrl-C (SIGINT) and SIGTERM on real ``rankrl`` processes: what was kept and the exact command that continues."""

from __future__ import annotations

import json
import signal

import pytest

from rankrl import interrupt
from tests.processes import TINY_AGENT, TINY_FINETUNE, rankrl, run, stop, wait_for


def test_a_stop_request_is_honoured_at_the_next_stop_point():
    interrupt.clear()
    interrupt.stop_point(lambda: "unused")  # nothing pending: no effect
    interrupt.request(signal.SIGTERM)
    try:
        with pytest.raises(interrupt.Interrupted, match="kept X") as caught:
            interrupt.stop_point(lambda: "kept X")
    finally:
        interrupt.clear()
    assert caught.value.exit_code == 143 and not isinstance(caught.value, KeyboardInterrupt)


def test_train_on_sigint_saves_a_checkpoint_and_prints_the_resume_command(tmp_path):
    agent = tmp_path / "quick.yaml"
    agent.write_text(TINY_AGENT)
    run_dir = tmp_path / "runs" / "tiny" / "quick_0_1"
    process = rankrl("train", "--env", "tiny", "--agent", agent, "--timesteps", "100000", "--out", tmp_path / "runs",
                     "--no-progress")
    assert wait_for(lambda: (run_dir / "checkpoints" / "policy_10_steps.zip").exists(), process)
    code, out, err = stop(process, signal.SIGINT)
    assert code == 130, err
    assert f"Continue with: rankrl train --resume {run_dir}" in err and "train interrupted at" in err
    kept = err.split("kept ")[1].split(" ")[0]
    assert kept.endswith("_steps.zip") and (run_dir / "checkpoints" / kept.rsplit("/", 1)[1]).exists()
    assert "Traceback" not in err


def test_finetune_on_sigterm_saves_a_checkpoint_that_resume_continues(tmp_path):
    out = tmp_path / "run"
    process = rankrl("finetune", *TINY_FINETUNE, "--controller", "importance", "--steps", "2000", "--every", "5",
                     "--out", out)
    assert wait_for(lambda: (out / "checkpoints" / "step_5").exists(), process)
    code, _, err = stop(process, signal.SIGTERM)
    assert code == 143, err
    assert f"Continue with: rankrl finetune --resume {out}" in err and "finetune interrupted at step" in err
    step = int(err.split("at step ")[1].split(" ")[0])
    assert (out / "checkpoints" / f"step_{step}").is_dir() and "Traceback" not in err
    config = json.loads((out / "config.json").read_text())
    config["steps"] = step + 2  # finish quickly: the resumed run reads its own config
    (out / "config.json").write_text(json.dumps(config))
    resumed = run("finetune", "--resume", out, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out} at step {step}" in " ".join(resumed.stdout.split())
    assert json.loads((out / "metrics.json").read_text())["steps"] == step + 2


def test_bench_on_sigint_writes_the_report_and_prints_the_same_command_with_resume(tmp_path):
    out = tmp_path / "bench"
    args = ["bench", "--model", "tiny", "--tasks", "synthetic:keyword?n_train=128&n_eval=48", "--controllers",
            "fixed:2", "--seeds", "3", "--steps", "40", "--every", "5", "--rank", "4", "--num-groups", "2",
            "--batch-size", "8", "--max-length", "32", "--eval-size", "48", "--out", str(out), "--no-progress"]
    process = rankrl(*args)
    assert wait_for(lambda: (out / "results.csv").exists(), process)
    code, _, err = stop(process, signal.SIGINT)
    assert code == 130, err
    assert "bench interrupted:" in err and "Continue with: rankrl bench" in err
    assert err.strip().endswith(f"--out {out} --no-progress --resume")
    assert (out / "report.md").exists() and "Traceback" not in err
