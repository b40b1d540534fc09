"""The run settings: every field documented once, shared fields shared, docs/flags.md in sync."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rankrl.bench.config import BenchConfig
from rankrl.demos.main import DemoConfig
from rankrl.deploy.finetune import FinetuneConfig
from rankrl.settings import PANELS, RunSettings, flags_markdown, parse_numbers, split_list

CONFIGS = [RunSettings, FinetuneConfig, BenchConfig, DemoConfig]
SHARED = [item.name for item in dataclasses.fields(RunSettings)]


@pytest.mark.parametrize("cls", CONFIGS)
def test_every_field_has_help_and_a_panel(cls):
    for item in dataclasses.fields(cls):
        assert item.metadata.get("help", "").strip(), f"{cls.__name__}.{item.name} has no help"
        assert item.metadata["panel"] in PANELS


@pytest.mark.parametrize("cls", [FinetuneConfig, BenchConfig])
def test_finetune_and_bench_take_the_shared_settings_as_they_are(cls):
    assert issubclass(cls, RunSettings)
    base = {item.name: item for item in dataclasses.fields(RunSettings)}
    for item in dataclasses.fields(cls):
        if item.name in base:  # not declared again: one default, one help
            assert item.default == base[item.name].default and item.metadata == base[item.name].metadata


def test_demo_takes_the_shared_help_with_its_own_defaults():
    demo = {item.name: item for item in dataclasses.fields(DemoConfig)}
    shared = {item.name: item for item in dataclasses.fields(RunSettings)}
    common = set(demo) & set(shared)
    assert {"model", "steps", "every", "lr", "rank", "use_rslora"} <= common
    for name in common:
        assert demo[name].metadata["help"] == shared[name].metadata["help"]
    assert DemoConfig().steps == 150 != RunSettings().steps


def test_a_bench_run_gets_every_shared_setting():
    changed = {"model": "tiny", "num_hidden_layers": 2, "text_column": "t", "label_column": "l", "encoding": "latin-1",
               "drop_invalid": True, "rank": 4, "r_max": 12, "rank_step": 3, "num_groups": 2, "use_rslora": True,
               "steps": 7, "every": 3, "eval_every": 2, "eval_size": 9, "lr": 5e-4, "batch_size": 4,
               "max_length": 32, "trust_policy": True}
    assert set(changed) == set(SHARED)  # a new shared setting is added here too
    bench = BenchConfig(**changed, memory_scope="adapter")
    run = bench.finetune_config(seed=1, out="x", r_max=12, rank_step=3)
    assert run.shared_settings() == bench.shared_settings() and run.memory_scope == "adapter"
    assert bench.finetune_config(seed=1, out="x", lr=1e-2, rank=2).lr == 1e-2


def test_list_parsing_names_the_flag():
    assert split_list(" a, b,,c ") == ["a", "b", "c"] and split_list(None) == []
    assert parse_numbers("2, 4", "--fixed-ranks", integer=True) == [2, 4]
    with pytest.raises(ValueError, match="--fixed-ranks: '2.5' is not an integer"):
        parse_numbers("2.5", "--fixed-ranks", integer=True)


@pytest.mark.parametrize("cls", [FinetuneConfig, BenchConfig, DemoConfig])
def test_a_saved_config_loads_back_equal(cls, tmp_path):
    config = cls(model="tiny", steps=12, every=3, lr=2e-3, use_rslora=True)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dataclasses.asdict(config)))
    assert cls(**json.loads(path.read_text())) == config


def test_docs_flags_md_is_generated_from_the_dataclasses():
    doc = Path(__file__).resolve().parents[1] / "docs" / "flags.md"
    assert doc.read_text() == flags_markdown(), "regenerate: python -m rankrl.settings > docs/flags.md"
    assert "| `--rslora/--no-rslora` |" in doc.read_text() and "| `--tasks` | required |" in doc.read_text()
