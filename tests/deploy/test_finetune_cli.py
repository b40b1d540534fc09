"""``rankrl finetune`` end to end on the tiny model, its errors before training, and ``rankrl explain``."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from rankrl.cli import app
from rankrl.controllers import DecisionLog
from tests.controllers.test_learned import save_policy

runner = CliRunner(env={"COLUMNS": "200"})
WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "blue", "red", "small", "big", "house", "tree",
         "quickly", "slowly"]
TINY = ["--model", "tiny", "--rank", "4", "--num-groups", "2", "--batch-size", "8", "--max-length", "32",
        "--eval-size", "48", "--lr", "3e-3", "--no-progress"]
SYNTHETIC = ["--data", "synthetic:keyword?n_train=256&n_eval=64"]


def write_tsv(path, rows: int, seed: int) -> None:
    """Sentences labelled by whether they contain 'zebra' (a column named 'sentence', labels 'yes'/'no')."""
    rng = random.Random(seed)
    lines = ["sentence\tanswer"]
    for i in range(rows):
        words = rng.choices(WORDS, k=rng.randint(4, 9))
        if i % 2:
            words.insert(rng.randrange(len(words) + 1), "zebra")
        lines.append(f"{' '.join(words)}\t{'yes' if i % 2 else 'no'}")
    path.write_text("\n".join(lines) + "\n")


def finetune(*args: str):
    return runner.invoke(app, ["finetune", *TINY, *args])


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    """A finetune run driven by an (untrained, random-weight) PPO policy for the tiny layout."""
    root = tmp_path_factory.mktemp("learned")
    policy = save_policy(root / "policy")
    out = root / "run"
    result = finetune(*SYNTHETIC, "--controller", f"learned:{policy}", "--budget-mb", "19.6", "--steps", "24",
                      "--every", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_finetune_on_local_tsv_files(tmp_path):
    write_tsv(tmp_path / "train.tsv", 160, seed=0)
    write_tsv(tmp_path / "dev.tsv", 48, seed=1)
    out = tmp_path / "run"
    result = finetune("--data", str(tmp_path / "train.tsv"), "--eval-data", str(tmp_path / "dev.tsv"),
                      "--text-column", "sentence", "--label-column", "answer", "--controller", "importance",
                      "--steps", "20", "--every", "5", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} >= {"config.json", "decisions.jsonl", "metrics.json", "tb", "adapter"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["decisions"] == 5 and 0 <= metrics["accuracy"] <= 1
    assert metrics["peak_memory_bytes"] > 0 and metrics["trainable_params"] > 0 and "macro_f1" in metrics
    assert [r["step"] for r in DecisionLog.read(out)] == [0, 5, 10, 15, 20]  # 0: before the first step
    config = json.loads((out / "config.json").read_text())
    assert config["controller"] == "importance" and config["text_column"] == "sentence"
    assert (out / "adapter" / "adapter_config.json").exists()
    assert "accuracy" in result.output and "rankrl explain" in result.output


def test_finetune_on_synthetic_data_with_a_budget(tmp_path):
    out = tmp_path / "run"
    result = finetune(*SYNTHETIC, "--controller", "greedy-memory", "--budget-mb", "19.7", "--steps", "20",
                      "--every", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    records = DecisionLog.read(out)
    assert len(records) == 6 and all(r["memory_after"] <= r["budget"] for r in records)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["peak_memory_mib"] <= 19.7 and metrics["budget_mib"] == pytest.approx(19.7)


def test_finetune_refuses_an_existing_out(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = finetune(*SYNTHETIC, "--steps", "4", "--out", str(out))
    assert result.exit_code == 2 and "already exists and is not empty" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--controller", "nope"], "Known controllers: fixed, layerwise, importance, complexity, variance, greedy-memory"),
    (["--controller", "greedy-memory", "--budget-mb", "2"], "is below the smallest configuration"),
    (["--controller", "learned:{tmp}/missing"], "No policy at"),
    (["--controller", "learned:{tmp}/corrupt/policy.zip"], "is a bare stable-baselines3 zip and was not loaded"),
    (["--controller", "learned:{tmp}/corrupt/policy.zip", "--trust-policy"], "is not a stable-baselines3 zip"),
    (["--controller", "learned:{tmp}/g1"], "trained for 1 layer groups but this run has 2"),
    (["--controller", "greedy-memory"], "needs a memory budget"),
    (["--controller", "greedy-memory", "--budget-mb", "30", "--budget-frac", "0.9"], "not several"),
    (["--controller", "importance", "--budget-frac", "0"], "--budget-frac must be a positive fraction"),
])
def test_bad_input_fails_before_training_and_leaves_nothing(tmp_path, flags, message):
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "policy.zip").write_bytes(b"not a zip at all")
    if "g1" in flags[-1]:
        save_policy(tmp_path / "g1", num_groups=1)
    out = tmp_path / "run"
    result = finetune(*SYNTHETIC, *[f.format(tmp=tmp_path) for f in flags], "--steps", "8", "--every", "4",
                      "--out", str(out))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in " ".join(result.output.split())
    assert not out.exists()


def test_a_policy_decides_first_on_the_accuracy_before_training(learned_run):
    """As in the environment a policy is trained in: evaluated at reset, then the first decision."""
    first = DecisionLog.read(learned_run)[0]
    metrics = json.loads((learned_run / "metrics.json").read_text())
    assert first["step"] == 0 and first["observation"]["eval/accuracy"] == pytest.approx(metrics["initial_accuracy"])
    assert metrics["initial_accuracy"] > 0


def test_explain_draws_a_png_and_prints_a_summary(learned_run):
    result = runner.invoke(app, ["explain", str(learned_run)])
    assert result.exit_code == 0, result.output
    png = learned_run / "explain.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "controller learned:" in result.output and "7 decisions" in result.output
    assert "policy saliency (mean |grad x input|" in result.output
    assert "ranks per group: start [4, 4]" in result.output and str(png) in result.output


def test_explain_of_a_heuristic_run_and_of_a_directory_without_decisions(tmp_path):
    out = tmp_path / "run"
    assert finetune(*SYNTHETIC, "--controller", "fixed:2", "--steps", "8", "--every", "4",
                    "--out", str(out)).exit_code == 0
    result = runner.invoke(app, ["explain", str(out), "--out", str(tmp_path / "pic.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pic.png").stat().st_size > 10_000 and "saliency" not in result.output
    assert "start [4, 4] -> end [2, 2]" in result.output
    result = runner.invoke(app, ["explain", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "No decisions.jsonl" in result.output


def test_learned_policy_runs_behind_the_wall_it_was_trained_with(tmp_path):
    """Without --budget-mb a learned policy gets its training wall (metadata ``budget_frac`` x start memory)."""
    policy = save_policy(tmp_path / "grow", bias=[0.0, 0.0, 3.0, 0.0, 0.0] * 2)  # both groups always ask for +step
    spec = json.loads((policy / "policy.json").read_text())
    spec["metadata"]["budget_frac"] = 1.0
    (policy / "policy.json").write_text(json.dumps(spec))
    out = tmp_path / "run"
    result = finetune(*SYNTHETIC, "--controller", f"learned:{policy}", "--steps", "12", "--every", "4",
                      "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "x the reference" in " ".join(result.output.split())
    metrics = json.loads((out / "metrics.json").read_text())
    records = DecisionLog.read(out)
    assert metrics["budget_mib"] == pytest.approx(metrics["peak_memory_mib"])  # the start memory is the wall
    assert all(r["clipped_groups"] for r in records) and metrics["group_ranks"] == [4, 4]
    assert metrics["mean_memory_mib"] == pytest.approx(metrics["peak_memory_mib"])
    assert json.loads((out / "config.json").read_text())["budget_frac"] == 1.0
    unbounded = tmp_path / "unbounded"  # an absolute budget replaces the relative wall
    result = finetune(*SYNTHETIC, "--controller", f"learned:{policy}", "--budget-mb", "1000", "--steps", "8",
                      "--every", "4", "--out", str(unbounded))
    assert result.exit_code == 0, result.output
    assert json.loads((unbounded / "metrics.json").read_text())["group_ranks"] == [8, 8]


def test_lora_scaling_is_the_flag_s_not_the_policy_s(tmp_path):
    """A policy trained under rsLoRA still deploys with PEFT's alpha/r unless --rslora asks otherwise."""
    from rankrl.deploy.finetune import (
        FinetuneConfig,
        build_controller,
        session_config_for,
        with_policy_defaults,
    )

    policy = save_policy(tmp_path / "rs")
    spec = json.loads((policy / "policy.json").read_text())
    spec["metadata"]["use_rslora"] = True
    (policy / "policy.json").write_text(json.dumps(spec))
    learned, _ = build_controller(f"learned:{policy}")
    assert session_config_for(with_policy_defaults(learned, FinetuneConfig())).use_rslora is False
    assert session_config_for(with_policy_defaults(learned, FinetuneConfig(use_rslora=True))).use_rslora is True


def test_finetune_under_a_moving_trace_never_exceeds_its_wall(tmp_path):
    trace = tmp_path / "down.csv"
    trace.write_text("step,budget_frac\n0,1.0\n10,0.6\n")
    out = tmp_path / "run"
    result = finetune(*SYNTHETIC, "--controller", "importance", "--budget-trace", str(trace), "--memory-scope",
                      "adapter", "--steps", "20", "--every", "4", "--out", str(out))
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["wall_violations"] == 0 and metrics["max_over_wall_mib"] == 0
    assert metrics["budget_mib"] == pytest.approx(0.6 * metrics["reference_mib"], rel=1e-6)
    records = DecisionLog.read(out)
    assert 10 in [r["step"] for r in records]  # the drop is met at once, not at the next decision (12)
    assert all(r["memory_after"] <= r["budget"] for r in records)
    explained = runner.invoke(app, ["explain", str(out)])
    assert explained.exit_code == 0 and (out / "explain.png").stat().st_size > 10_000


@pytest.mark.parametrize(("trace", "message"), [
    ("step,budget_mb\n0,100\n20,90\n10,80\n", "steps must increase"),
    ("", "is empty"),
    ("step,budget_mb\n0,abc\n", "is not numeric"),
])
def test_a_bad_trace_file_fails_before_anything_is_written(tmp_path, trace, message):
    path = tmp_path / "trace.csv"
    path.write_text(trace)
    out = tmp_path / "run"
    result = finetune(*SYNTHETIC, "--controller", "fixed", "--budget-trace", str(path), "--out", str(out))
    assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output
    assert not out.exists()


def test_budget_fractions_must_be_positive_and_unique_in_kind(tmp_path):
    result = finetune(*SYNTHETIC, "--budget-frac", "0", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "--budget-frac must be a positive fraction" in result.output
    result = finetune(*SYNTHETIC, "--budget", "live", "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "needs CUDA" in result.output


def test_every_controller_reports_memory_in_the_one_scope_of_memory_scope(tmp_path):
    """A learned policy trained in the adapter scope keeps its wall there, fixed rank's wall is in total; both
    print and save their memory in --memory-scope (default total), named, so the figures compare."""
    policy = save_policy(tmp_path / "policy")
    spec = json.loads((policy / "policy.json").read_text())
    spec["metadata"]["memory_scope"] = "adapter"
    (policy / "policy.json").write_text(json.dumps(spec))
    for scope_args, scope in (([], "total"), (["--memory-scope", "adapter"], "adapter")):
        for name, controller, wall_scope in (("fixed", "fixed:4", scope), ("learned", f"learned:{policy}", "adapter")):
            out = tmp_path / f"{name}-{scope}"
            result = finetune(*SYNTHETIC, "--controller", controller, "--budget-frac", "1.0", "--steps", "4",
                              "--every", "2", "--out", str(out), *scope_args)
            assert result.exit_code == 0, result.output
            output = " ".join(result.output.split())
            assert f"peak memory ({scope} scope)" in output and f"budget ({scope} scope)" in output
            metrics = json.loads((out / "metrics.json").read_text())
            assert (metrics["memory_scope"], metrics["wall_memory_scope"]) == (scope, wall_scope)
            assert metrics["peak_memory_mib"] == pytest.approx(metrics[f"peak_memory_{scope}_mib"])
            assert metrics["budget_mib"] == pytest.approx(metrics["reference_mib"])  # 1.0 x, in one scope
            assert metrics["peak_memory_total_mib"] > metrics["peak_memory_adapter_mib"]  # by the frozen base
            assert f"{metrics['peak_memory_mib']:.2f} MiB" in output
