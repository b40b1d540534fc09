"""The main job (`rankrl demo`): train a policy, deploy it next to the baselines, write the comparison."""

from __future__ import annotations

import csv

import pytest

from rankrl.demos.main import DemoConfig, run_demo
from tests.processes import tiny_agent


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    agent = root / "quick.yaml"
    agent.write_text(tiny_agent(eval_freq=10, n_epochs=1))
    config = DemoConfig(env="tiny", agent=str(agent), timesteps=10, n_envs=1, model="tiny", bc_episodes=2,
                        eval_episodes=1,
                        task="synthetic:keyword?difficulty=0.2&n_train=128&n_eval=64&seed=5", steps=8, every=4,
                        eval_size=32, controllers=["learned", "fixed", "static-fit"], out=str(root / "runs"))
    return run_demo(config, progress=False)


def test_the_demo_compares_every_controller_and_writes_its_files(demo):
    assert [row["controller"] for row in demo.rows] == ["learned (just trained)", "fixed r=8", "static-fit"]
    assert demo.run_dir.name == "demo_1"
    assert (demo.policy_dir / "policy.zip").exists()
    import json

    metadata = json.loads((demo.policy_dir / "metadata.json").read_text())
    assert metadata["behaviour_cloning"]["teacher"] == "static-fit" and metadata["behaviour_cloning"]["episodes"] == 2
    from rankrl.train.callbacks import read_evaluations

    # The clone before PPO and the policy after it, each paired with the rules on the same held-out episodes.
    evaluations = read_evaluations(demo.policy_dir)
    assert [e["timesteps"] for e in evaluations] == [0, 10]
    assert set(evaluations[-1]["paired"]) == {"fixed", "static-fit"}
    with (demo.run_dir / "comparison.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["controller"] for row in rows] == [row["controller"] for row in demo.rows]
    assert "| learned (just trained) |" in (demo.run_dir / "comparison.md").read_text()
    assert len(demo.pngs) == 4 and all(png.stat().st_size > 0 for png in demo.pngs)
    for name in ("learned-just-trained", "fixed-r-8", "static-fit"):
        assert (demo.run_dir / "finetune" / name / "adapter" / "adapter_config.json").exists()


def test_every_run_meets_the_dropping_budget_and_the_learned_run_uses_the_trained_policy(demo):
    assert all(row["wall_violations"] == 0 for row in demo.rows)
    fixed = next(row for row in demo.rows if row["controller"].startswith("fixed"))
    assert fixed["final_ranks"] != "8 8"  # the wall took memory from plain LoRA when the budget dropped
    assert (demo.run_dir / "budget_trace.csv").read_text() == "step,budget_frac\n0,0.9\n4,0.6\n"
    import json

    config = json.loads((demo.run_dir / "finetune" / "learned-just-trained" / "config.json").read_text())
    assert config["controller_spec"] == f"learned:{(demo.policy_dir / 'policy.json').resolve()}"


def test_bad_input_fails_before_a_run_directory_exists(tmp_path):
    with pytest.raises(ValueError, match="Unknown controller 'nope'"):
        run_demo(DemoConfig(controllers=["fixed", "nope"], out=str(tmp_path / "runs")), progress=False)
    with pytest.raises(ValueError, match="--timesteps must be a positive integer"):
        run_demo(DemoConfig(timesteps=0, out=str(tmp_path / "runs")), progress=False)
    assert not (tmp_path / "runs").exists()


def test_the_printed_table_reads_at_80_columns_with_full_controller_names():
    from rich.console import Console

    from rankrl.demos.main import _table

    names = ["learned (just trained)", "learned:default (shipped)", "static-fit", "autofreeze", "fixed r=8"]
    rows = [{"controller": name, "accuracy": 0.8734, "macro_f1": 0.8, "mean_adapter_mib": 52.31,
             "peak_adapter_mib": 138.96, "train_seconds": 312.4, "final_ranks": f"16* 0 4 {i}",
             "wall_violations": i} for i, name in enumerate(names)]
    console = Console(width=80, record=True, color_system=None)
    console.print(_table(rows, DemoConfig()))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in "\n".join(lines)
    for i, name in enumerate(names):
        line = next(line for line in lines if name in line)  # the full name, on one line, with its figures
        assert "0.873" in line and "52.3" in line and "139.0" in line and line.split()[-1] == str(i)
        assert any(line.strip() == f"ranks 16* 0 4 {i}" for line in lines)
