"""Options generated from the settings dataclasses: one option per field, its help, its default, a parse
that gives back the config."""

from __future__ import annotations

import dataclasses

import pytest
import typer
from typer.core import TyperOption
from typer.testing import CliRunner

from rankrl.bench.config import BenchConfig
from rankrl.cli import app
from rankrl.cli_options import build_config, field_default, option_default, options_from
from rankrl.demos.main import DemoConfig
from rankrl.deploy.finetune import FinetuneConfig
from rankrl.settings import REQUIRED, option_flags, setting

COMMANDS = [("finetune", FinetuneConfig), ("bench", BenchConfig), ("demo", DemoConfig)]
REQUIRED_ARGS = {"bench": ["--tasks", "synthetic:keyword", "--out", "runs/bench"]}
runner = CliRunner(env={"COLUMNS": "200"})


def command(name: str):
    return typer.main.get_command(app).commands[name]


def options_of(name: str) -> dict[str, TyperOption]:
    return {param.name: param for param in command(name).params if isinstance(param, TyperOption)}


@pytest.mark.parametrize(("name", "cls"), COMMANDS)
def test_every_field_is_exactly_one_option_with_its_help(name, cls):
    options = options_of(name)
    every_flag = [flag for option in options.values() for flag in option.opts + option.secondary_opts]
    assert len(every_flag) == len(set(every_flag))
    for item in dataclasses.fields(cls):
        option = options[item.name]
        assert option.help == item.metadata["help"]
        assert "/".join(option.opts + option.secondary_opts) == option_flags(item)


@pytest.mark.parametrize(("name", "cls"), COMMANDS)
def test_option_defaults_are_the_dataclass_defaults(name, cls):
    options = options_of(name)
    for item in dataclasses.fields(cls):
        option = options[item.name]
        cli_default = item.metadata.get("cli_default", dataclasses.MISSING)
        if cli_default is REQUIRED:
            assert option.required
        elif cli_default is dataclasses.MISSING:
            default = field_default(item)
            expected = ",".join(map(str, default)) or None if isinstance(default, list) else default
            assert option.default == expected == option_default(item), item.name


@pytest.mark.parametrize(("name", "cls"), COMMANDS)
def test_parsing_no_flags_gives_the_default_config(name, cls):
    context = command(name).make_context(name, list(REQUIRED_ARGS.get(name, [])))
    config = build_config(cls, context.params)
    expected = cls() if name != "finetune" else cls(data=None, out=None)  # finetune checks --data/--out itself
    assert config == expected


def argv_of(config) -> list[str]:
    """The command line that gives ``config``."""
    argv = []
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        flags = option_flags(item).split("/")
        if isinstance(value, bool):
            if value or len(flags) > 1:
                argv.append(flags[0] if value else flags[1])
        elif isinstance(value, list):
            argv += [flags[0], ",".join(map(str, value))]
        elif value is not None:
            argv += [flags[0], str(value)]
    return argv


CHANGED = {
    "finetune": FinetuneConfig(model="tiny", data="synthetic:negation", eval_data="dev.tsv", text_column="t",
                               controller="importance", budget_frac=0.5, memory_scope="adapter", use_rslora=True,
                               steps=20, every=5, eval_every=0, lr=2e-3, rank=4, r_max=8, num_groups=2, seed=3,
                               out="runs/x", checkpoint_every=10, encoding="latin-1", drop_invalid=True,
                               trust_policy=True),
    "bench": BenchConfig(model="tiny", tasks=["a=synthetic:keyword", "b.tsv:c.tsv"],
                         controllers=["fixed", "layerwise:0,4,8,16", "importance:target_rank=2,warmup_steps=5"],
                         seeds=2, budget_mb=[19.5, 20.0], budget_frac=[0.5], fixed_ranks=[2, 8], fixed_lrs=[1e-3, 3e-3],
                         memory_scope="adapter", use_rslora=True, steps=9, out="runs/b", resume=True),
    "demo": DemoConfig(env="tiny", agent="a2c", timesteps=10, n_envs=1, model="tiny", task="synthetic:keyword",
                       teacher="autofreeze", bc_episodes=3, eval_episodes=2,
                       steps=8, every=4, controllers=["learned", "fixed"], budget_frac=0.5, budget_high=0.8, seed=1,
                       out="runs/d", use_rslora=True),
}


@pytest.mark.parametrize(("name", "cls"), COMMANDS)
def test_a_parse_gives_back_an_equal_config(name, cls):
    config = CHANGED[name]
    assert config != cls()
    context = command(name).make_context(name, argv_of(config))
    assert build_config(cls, context.params) == config


def test_a_bad_number_list_names_its_flag(tmp_path):
    result = runner.invoke(app, ["bench", "--tasks", "synthetic:keyword", "--out", str(tmp_path / "b"),
                                 "--budget-mb", "20,abc"])
    assert result.exit_code == 2 and "--budget-mb: 'abc' is not a number" in result.output


def test_a_field_without_help_is_refused():
    @dataclasses.dataclass
    class Bare:
        x: int = 1

    with pytest.raises(TypeError, match="no help"):
        options_from(Bare)(lambda **options: None)


def test_a_command_keeps_its_own_options_after_the_generated_ones():
    @dataclasses.dataclass
    class Small:
        size: int = setting(3, "Size.", panel="Training")
        names: list[str] = setting(help="Names.", panel="Model and task", parse=lambda text: text.split(","),
                                   default_factory=lambda: ["a"])

    seen = {}
    mini = typer.Typer()

    @mini.command()
    @options_from(Small)
    def run(loud: bool = typer.Option(False, "--loud"), **options) -> None:
        seen.update(config=build_config(Small, options), loud=loud)

    result = CliRunner().invoke(mini, ["--names", "x,y", "--loud"])
    assert result.exit_code == 0, result.output
    assert seen == {"config": Small(size=3, names=["x", "y"]), "loud": True}
    assert [param.name for param in typer.main.get_command(mini).params][:3] == ["names", "size", "loud"]
