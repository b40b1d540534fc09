"""The live-resizing demo (`rankrl resize-demo`): three phases on the tiny model, a lossless reload."""

from __future__ import annotations

from typer.testing import CliRunner

from rankrl.cli import app

runner = CliRunner(env={"COLUMNS": "200"})


def test_resize_demo_runs_end_to_end_on_the_tiny_model(tmp_path):
    result = runner.invoke(app, ["resize-demo", "--model", "tiny", "--num-groups", "2", "--steps-per-phase", "3",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "max |diff| = 0.00e+00" in result.output
    run_dir = next(tmp_path.iterdir())
    assert (run_dir / "config.json").exists() and (run_dir / "adapter" / "adapter_config.json").exists()
