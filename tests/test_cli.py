"""The command line: commands run, errors are one readable line with exit code 2."""

from __future__ import annotations

from typer.testing import CliRunner

from rankrl.cli import app

runner = CliRunner(env={"COLUMNS": "200"})


def test_tasks_lists_and_previews():
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0 and "negation" in result.output and "pair" in result.output
    result = runner.invoke(app, ["tasks", "--preview", "order", "-k", "3"])
    assert result.exit_code == 0 and "synthetic:order" in result.output
    result = runner.invoke(app, ["tasks", "--preview", "nope"])
    assert result.exit_code == 2 and "keyword" in result.output


def test_presets_lists_envs_and_agents():
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0
    assert "rankrl/NAME-v3" in result.output and "tiny" in result.output and "ppo" in result.output


def test_train_bad_input_exits_cleanly(tmp_path):
    result = runner.invoke(app, ["train", "--env", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Known presets" in result.output
    result = runner.invoke(app, ["train", "--env", "tiny", "--timesteps", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--timesteps must be a positive" in result.output
    assert not any(tmp_path.iterdir())


def test_demo_and_resize_demo_refuse_an_unknown_model_before_writing(tmp_path):
    for command in ("demo", "resize-demo"):
        result = runner.invoke(app, [command, "--model", "./no/such/model", "--out", str(tmp_path)])
        assert result.exit_code == 2 and "Unknown model" in result.output
    assert not any(tmp_path.iterdir())
