"""Bad data and bad places are refused with one clear error, before anything is created; divergence is no result."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from rankrl.cli import DIVERGED_EXIT, app
from tests.controllers.test_learned import save_policy

runner = CliRunner(env={"COLUMNS": "200"})
TINY = ["--model", "tiny", "--rank", "4", "--num-groups", "2", "--batch-size", "8", "--max-length", "32",
        "--eval-size", "48", "--no-progress"]
DATA = "synthetic:keyword?n_train=128&n_eval=48"


def finetune(*args):
    return runner.invoke(app, ["finetune", *TINY, *args])


@pytest.fixture(scope="module")
def diverged(tmp_path_factory):
    out = tmp_path_factory.mktemp("diverged") / "run"
    result = finetune("--data", DATA, "--lr", "1e6", "--steps", "30", "--every", "5", "--out", str(out))
    return out, result


def test_a_diverged_run_exits_non_zero_saves_no_adapter_and_says_so(diverged):
    out, result = diverged
    assert result.exit_code == DIVERGED_EXIT, result.output
    assert "diverged at step" in result.output and "not a result" in " ".join(result.output.split())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["diverged"] is True and metrics["adapter"] is None and metrics["diverged_at_step"] >= 1
    assert not (out / "adapter").exists()


def test_explain_of_a_diverged_run_says_what_happened(diverged):
    out, _ = diverged
    result = runner.invoke(app, ["explain", str(out)])  # its decision at step 0 is drawn; the summary says why
    assert result.exit_code == 0, result.output
    assert "the run diverged at step" in result.output and "lower --lr" in result.output
    (out / "decisions.jsonl").unlink()  # a run that diverged before its first decision
    result = runner.invoke(app, ["explain", str(out)])
    assert result.exit_code == 2 and "diverged at step" in result.output and "Lower --lr" in result.output


def test_explain_top_k_must_be_positive(tmp_path):
    result = runner.invoke(app, ["explain", str(tmp_path), "--top-k", "-3"])
    assert result.exit_code == 2 and "--top-k must be a positive number" in result.output


@pytest.mark.parametrize("command", ["finetune", "train", "bench"])
def test_an_out_that_cannot_be_written_is_refused_before_anything(tmp_path, monkeypatch, command):
    blocked = tmp_path / "read-only"
    blocked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(blocked) else real(path, mode))
    args = {"finetune": ["finetune", *TINY, "--data", DATA, "--steps", "4", "--out", str(blocked / "run")],
            "train": ["train", "--env", "tiny", "--timesteps", "10", "--out", str(blocked), "--no-progress"],
            "bench": ["bench", *TINY, "--tasks", DATA, "--controllers", "fixed:2", "--seeds", "1", "--steps", "4",
                      "--out", str(blocked / "bench")]}[command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "is not writable" in result.output, result.output
    assert list(blocked.iterdir()) == [] and "Traceback" not in result.output


def test_a_file_where_the_out_directory_should_be_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    result = finetune("--data", DATA, "--steps", "4", "--out", str(tmp_path / "file" / "run"))
    assert result.exit_code == 2 and "is a file, not a directory" in result.output


def test_explain_into_a_read_only_place_is_refused(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert finetune("--data", DATA, "--steps", "4", "--every", "2", "--out", str(run)).exit_code == 0
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(blocked) else real(path, mode))
    result = runner.invoke(app, ["explain", str(run), "--out", str(blocked / "x.png")])
    assert result.exit_code == 2 and "is not writable" in result.output


def test_empty_labels_via_the_cli_and_drop_invalid(tmp_path):
    lines = ["text\tlabel"] + [f"w{i} w{i + 1} zebra\tyes" if i % 2 else f"w{i} w{i + 2}\tno" for i in range(40)]
    lines[5] = "no label here\t"
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    refused = finetune("--data", str(tmp_path / "train.tsv"), "--steps", "4", "--out", str(tmp_path / "a"))
    assert refused.exit_code == 2 and "data rows 5" in refused.output and "--drop-invalid" in refused.output
    assert not (tmp_path / "a").exists()
    dropped = finetune("--data", str(tmp_path / "train.tsv"), "--steps", "4", "--out", str(tmp_path / "b"),
                       "--drop-invalid")
    assert dropped.exit_code == 0, dropped.output
    assert "1 row(s) without a label dropped" in " ".join(dropped.output.split())


def test_junk_policy_files_are_named(tmp_path):
    directory = save_policy(tmp_path / "zip", as_zip=True)
    (directory / "metadata.json").write_text("{junk")
    result = finetune("--data", DATA, "--steps", "4", "--controller", f"learned:{directory}", "--trust-policy",
                      "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "metadata.json (policy metadata) is not valid JSON" in result.output
    (directory / "metadata.json").write_text("{}")
    (directory / "features.json").write_text("[1, 2]")
    result = finetune("--data", DATA, "--steps", "4", "--controller", f"learned:{directory}", "--trust-policy",
                      "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "features.json (observation layout) must hold a JSON object" in result.output
    assert not (tmp_path / "run").exists()


def test_finetune_resume_of_a_train_directory_is_refused(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "config.json").write_text(json.dumps({"command": "train"}))
    result = runner.invoke(app, ["finetune", "--resume", str(tmp_path / "t")])
    assert result.exit_code == 2 and "is a rankrl train run, not a finetune run" in result.output
    missing = runner.invoke(app, ["finetune", "--model", "tiny"])
    assert missing.exit_code == 2 and "--data and --out required" in missing.output
