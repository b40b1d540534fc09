"""The run settings shared by ``rankrl finetune``, ``rankrl bench`` and ``rankrl demo``, each written once.

:class:`RunSettings` holds what every fine-tuning run takes (model, data columns, schedule, LoRA ranks, memory
scope, reliability switches). ``FinetuneConfig`` and ``BenchConfig`` inherit from it and add only their own
settings. Every field carries its help text and command-line spelling in ``metadata``
(see :func:`setting`), from which :mod:`rankrl.cli_options` builds the Typer options and :func:`flags_table`
writes ``docs/flags.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any

PANELS = ("Policy training", "Model and task", "Data files", "Controller", "Memory budget", "Training", "Run")
"""Help panels of the generated options, in the order ``--help`` shows them."""

REQUIRED = object()
"""``cli_default`` of an option the command line must give although the dataclass has a default."""


def setting(default: Any = MISSING, help: str = "", *, panel: str, flag: str | None = None,
            parse: Callable[[str], Any] | None = None, cli_default: Any = MISSING,
            default_factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field that is also one command-line option.

    Args:
        default: The field's default (and the option's, unless ``cli_default`` is given).
        help: The option's help text.
        panel: One of :data:`PANELS`.
        flag: The option's declaration when it is not ``--field-name`` (``"--rslora/--no-rslora"``).
        parse: Turns the option's text into the field's value (comma-separated lists).
        cli_default: The option's default where it differs from the field's: ``None`` for an option a command
            checks itself (``--data``, required unless ``--resume``), :data:`REQUIRED` for one Typer requires.
        default_factory: For list defaults.
    """
    if panel not in PANELS:
        raise ValueError(f"panel {panel!r} is not one of {PANELS}")
    metadata = {"help": help, "panel": panel, "flag": flag, "parse": parse, "cli_default": cli_default}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def split_list(text: str | list | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; a list is stripped of blanks; ``None`` -> ``[]``."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else [str(item) for item in text]
    return [item.strip() for item in items if item.strip()]


def parse_numbers(text: str | list | None, flag: str, integer: bool = False) -> list:
    """Comma-separated numbers of a flag (``"5e-4,1e-3"``); a bad item names the flag."""
    out = []
    for item in split_list(text):
        try:
            out.append(int(item) if integer else float(item))
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise ValueError(f"{flag}: {item!r} is not {kind} (give a comma-separated list).") from None
    return out


def number_list(flag: str, integer: bool = False) -> Callable[[str], list]:
    """The ``parse`` of a comma-separated number option (a bad item names ``flag``)."""
    return lambda text: parse_numbers(text, flag, integer=integer)


def flag_name(name: str) -> str:
    """The long option of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def option_flags(item: dataclasses.Field) -> str:
    """How the option of a field is spelled (``--rslora/--no-rslora``, ``--batch-size``)."""
    return item.metadata.get("flag") or flag_name(item.name)


def help_of(cls: type, name: str) -> dict:
    """The metadata of field ``name`` of ``cls``: for a dataclass that takes a shared setting's help as is."""
    return dict(next(item for item in fields(cls) if item.name == name).metadata)


def shared(name: str, default: Any) -> Any:
    """A field with the help, flag and panel of :class:`RunSettings` field ``name`` and another default (the
    demo's shorter runs)."""
    metadata = next(item for item in fields(RunSettings) if item.name == name).metadata
    return setting(default, metadata["help"], panel=metadata["panel"], flag=metadata["flag"])


@dataclass
class RunSettings:
    """The settings of a fine-tuning run that ``finetune`` and ``bench`` share (``demo`` takes their help)."""

    model: str = setting("default", "'default' (MiniLM-L6), 'tiny', a model directory or hub name.",
                         panel="Model and task")
    num_hidden_layers: int | None = setting(None, "Keep only the first N layers of the model.",
                                            panel="Model and task")
    text_column: str | None = setting(None, "Text column of file / hub data (default: auto-detected).",
                                      panel="Data files")
    label_column: str | None = setting(None, "Label column of file / hub data (default: auto-detected).",
                                       panel="Data files")
    encoding: str | None = setting(None, "Text encoding of data files (default utf-8; e.g. latin-1, cp1252).",
                                   panel="Data files")
    drop_invalid: bool = setting(False, "Leave out rows with an empty label (counted) instead of refusing them "
                                 "with their row numbers.", panel="Data files")
    rank: int = setting(8, "Starting LoRA rank of every module (AdaLoRA: its target_r).", panel="Training")
    r_max: int | None = setting(None, "Largest group rank (default: a learned policy's, else 2 x --rank).",
                                panel="Training")
    rank_step: int | None = setting(None, "Rank granularity (default: a learned policy's, else r_max/8).",
                                    panel="Training")
    num_groups: int = setting(4, "Layer groups G (a learned policy fixes G).", panel="Training")
    use_rslora: bool = setting(False, "rsLoRA scaling alpha/sqrt(r) instead of PEFT's default alpha/r (learned "
                               "policies included; AdaLoRA keeps its own).", panel="Training",
                               flag="--rslora/--no-rslora")
    steps: int = setting(300, "Optimizer steps of each run.", panel="Training")
    every: int = setting(25, "Optimizer steps between controller decisions (and AdaLoRA's deltaT).",
                         panel="Training")
    eval_every: int | None = setting(None, "Evaluate every N steps (default: --every; 0: only at the start and "
                                     "the end).", panel="Training")
    eval_size: int = setting(256, "Rows of the fixed evaluation subset.", panel="Training")
    lr: float = setting(1e-3, "AdamW learning rate.", panel="Training")
    batch_size: int = setting(16, "Examples per optimizer step.", panel="Training")
    max_length: int = setting(64, "Tokens per example.", panel="Training")
    trust_policy: bool = setting(False, "Allow a bare stable-baselines3 policy.zip, which can run code when "
                                 "loaded (it holds pickled objects). Without it only policies saved as data "
                                 "(policy.json + policy.safetensors) load.", panel="Run")

    def shared_settings(self) -> dict:
        """The values of the :class:`RunSettings` fields (what a benchmark hands each of its runs)."""
        return {item.name: getattr(self, item.name) for item in fields(RunSettings)}


def _shown_default(item: dataclasses.Field) -> str:
    """The default a user sees: ``required``, the field's default (lists comma-separated), or nothing."""
    cli_default = item.metadata.get("cli_default", MISSING)
    if cli_default is REQUIRED:
        return "required"
    default = cli_default if cli_default is not MISSING else (
        item.default_factory() if item.default_factory is not MISSING else item.default)
    if isinstance(default, list):
        default = ",".join(str(value) for value in default) or None
    return "" if default is None else f"`{default}`"


def flags_table(cls: type, skip: type | None = None) -> str:
    """A Markdown table of the options of ``cls`` (flag, default, meaning) by help panel, without the fields
    of ``skip`` (a base class documented on its own)."""
    skipped = {item.name for item in fields(skip)} if skip is not None else set()
    items = [item for item in fields(cls) if item.name not in skipped]
    items.sort(key=lambda item: PANELS.index(item.metadata["panel"]))
    lines = ["| flag | default | meaning |", "| --- | --- | --- |"]
    for item in items:
        help_text = item.metadata["help"].replace("|", "\\|")
        lines.append(f"| `{option_flags(item)}` | {_shown_default(item)} | {help_text} |")
    return "\n".join(lines) + "\n"


def flags_markdown() -> str:
    """The text of ``docs/flags.md``: the shared flags, then each command's own (``python -m rankrl.settings``)."""
    from rankrl.bench.config import BenchConfig
    from rankrl.demos.main import DemoConfig
    from rankrl.deploy.finetune import FinetuneConfig

    return "\n".join([
        "# Flags of `rankrl finetune`, `rankrl bench` and `rankrl demo`", "",
        "Each flag is defined once, as a dataclass field with its help (`rankrl/settings.py`, "
        "`rankrl/deploy/finetune.py`, `rankrl/bench/config.py`, `rankrl/demo.py`); the commands' options are "
        "generated from these fields (`rankrl/cli_options.py`). This file is generated too: after changing a "
        "field, run `python -m rankrl.settings > docs/flags.md` (a test checks it is in sync).", "",
        "## Shared by `finetune` and `bench` (`RunSettings`)", "", flags_table(RunSettings),
        "## `rankrl finetune` only (`FinetuneConfig`)", "",
        "Also `--progress/--no-progress` and `--resume DIR` (continue an interrupted run).", "",
        flags_table(FinetuneConfig, skip=RunSettings),
        "## `rankrl bench` only (`BenchConfig`)", "",
        "Also `--progress/--no-progress`, `--backend local|ray` and `--address` (a Ray cluster's head).", "",
        flags_table(BenchConfig, skip=RunSettings),
        "## `rankrl demo` (`DemoConfig`)", "",
        "Its training flags take the shared help with the demo's shorter defaults; also `--progress/--no-progress`.",
        "", flags_table(DemoConfig),
    ])


if __name__ == "__main__":  # through the imported module, whose sentinels the configs use
    from rankrl.settings import flags_markdown as _flags_markdown

    print(_flags_markdown(), end="")
