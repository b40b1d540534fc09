"""Task syntax, controller lists, arms and the checks made before anything runs."""

from __future__ import annotations

import pytest

from rankrl.bench import BenchConfig, expand_arms, parse_task, split_controllers
from rankrl.bench.config import parse_numbers, parse_tasks
from rankrl.bench.plan import ADALORA, ADAPTIVE, FIXED, layerwise_ramp, plan_runs
from tests.bench.conftest import tiny_config


def test_task_syntax_names_train_and_eval():
    synthetic = parse_task("synthetic:keyword?n_train=64&n_eval=32")
    assert (synthetic.name, synthetic.train, synthetic.eval) == (
        "keyword", "synthetic:keyword?n_train=64&n_eval=32", None)
    named = parse_task("sst2=/data/train.tsv:/data/dev.tsv")
    assert (named.name, named.train, named.eval) == ("sst2", "/data/train.tsv", "/data/dev.tsv")
    assert parse_task("/data/train.tsv").name == "train" and parse_task("/data/train.tsv").eval is None
    assert parse_task("hard=synthetic:negation?difficulty=0.9").name == "hard"
    assert parse_task("stanfordnlp/sst2").name == "sst2"


def test_task_syntax_errors():
    with pytest.raises(ValueError, match="TRAIN:EVAL"):
        parse_task("train.tsv:")
    with pytest.raises(ValueError, match="both named 'keyword'"):
        parse_tasks(["synthetic:keyword", "synthetic:keyword?difficulty=0.9"])
    with pytest.raises(ValueError, match="--budget-mb: 'abc' is not a number"):
        parse_numbers("20,abc", "--budget-mb")


def test_controller_list_keeps_commas_inside_specs():
    text = "fixed,layerwise:0,4,8,16,importance:target_rank=2,warmup_steps=5,greedy-memory,adalora:init_r=6"
    assert split_controllers(text) == ["fixed", "layerwise:0,4,8,16", "importance:target_rank=2,warmup_steps=5",
                                       "greedy-memory", "adalora:init_r=6"]
    assert split_controllers(["fixed:4, importance"]) == ["fixed:4", "importance"]


def test_arms_expand_fixed_ranks_lrs_and_budgets(tmp_path):
    config = tiny_config(tmp_path, controllers=["fixed,fixed:4,layerwise,importance,adalora"], fixed_lrs=[1e-3, 3e-3],
                         budget_mb=[19.5, 20.0])
    arms = {arm.label: arm for arm in expand_arms(config)}
    fixed = [label for label, arm in arms.items() if arm.kind == FIXED]
    assert fixed == ["fixed:2@lr=0.001", "fixed:2@lr=0.003", "fixed:4@lr=0.001", "fixed:4@lr=0.003"]
    assert all(arms[label].budget_mb is None for label in fixed)
    assert arms["importance@19.5mb"].budget_mb == 19.5 and arms["importance@20mb"].kind == ADAPTIVE
    assert arms["layerwise@20mb"].spec == "layerwise:2,6"  # the ramp rank/2 .. 3 rank/2 around --rank 4
    assert arms["adalora"].kind == ADALORA and arms["adalora"].budget_mb is None
    runs = plan_runs(parse_tasks(config.tasks), list(arms.values()), seeds=2)
    assert len(runs) == 2 * len(arms) and runs[0].run_id == "keyword/fixed-2-lr-0.001/seed0"
    assert runs[0].directory(tmp_path) == tmp_path / "runs" / "keyword" / "fixed-2-lr-0.001" / "seed0"


def test_layerwise_ramp_keeps_the_mean_rank():
    assert layerwise_ramp(4, 8, 16, 2) == [4, 6, 10, 12]
    assert layerwise_ramp(1, 8, 16, 2) == [8]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"controllers": ["fixed,impotrance"]}, r"Unknown controller 'impotrance'.*Known controllers: fixed, layerwise.*"
                                            r"adalora, oracle-static\. Did you mean 'importance'\?"),
    ({"controllers": ["greedy-memory"]}, "needs a memory budget; pass --budget-frac, --budget-mb"),
    ({"controllers": ["importance,importance"]}, "lists 'importance' twice"),
    ({"controllers": ["fixed:0"]}, "rank of at least 1"),
    ({"controllers": ["adalora:init_r=2"]}, "target_r <= init_r"),
    ({"controllers": ["adalora:rank=3"]}, "unknown option 'rank=3'"),
    ({"controllers": ["learned:/nowhere/policy.zip"]}, "No policy at /nowhere/policy.zip"),
])
def test_bad_controllers_fail_before_anything_runs(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        expand_arms(tiny_config(tmp_path, **overrides))


@pytest.mark.parametrize(("overrides", "message"), [
    ({"seeds": 0}, "--seeds must be a positive integer"),
    ({"steps": 0}, "--steps must be a positive integer"),
    ({"budget_mb": [-1.0]}, "--budget-mb must be positive"),
    ({"fixed_ranks": [0, 4]}, "--fixed-ranks must be positive"),
    ({"fixed_lrs": [0.0]}, "--fixed-lrs must be positive"),
    ({"tasks": []}, "--tasks is empty"),
    ({"memory_scope": "gpu"}, "--memory-scope must be"),
])
def test_bad_settings_name_their_flag(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path, **overrides).check()


def test_settings_leave_out_the_directory_and_resume(tmp_path):
    settings = BenchConfig(out=str(tmp_path), resume=True).settings()
    assert "out" not in settings and "resume" not in settings and settings["seeds"] == 3
    # the command line's one string and the API's list are the same settings (a resume accepts either)
    assert (BenchConfig(controllers=["fixed,layerwise:2,6"]).settings()
            == BenchConfig(controllers=["fixed", "layerwise:2,6"]).settings())
