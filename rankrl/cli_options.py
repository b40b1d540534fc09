"""Typer options generated from a settings dataclass: one definition per flag.

``@options_from(FinetuneConfig)`` gives a command one ``typer.Option`` per dataclass field: the flag from the
field's name (or its ``flag`` metadata, e.g. ``--rslora/--no-rslora``), the default from the field's default,
the help and the help panel from its metadata (:func:`rankrl.settings.setting`). The command keeps its own
parameters for what is not a setting (``--progress``, ``--backend``) and turns the options into a config with
:func:`build_config`.

Typer stays the CLI library: it is what every command already uses, and it builds its options from a function
signature, so a generated :class:`inspect.Signature` is all it needs. jsonargparse (litgpt) or tyro (CleanRL)
would derive the same options from the dataclass, but with their own spelling and behaviour of every flag
(``--use_rslora`` / ``--use-rslora`` instead of ``--rslora/--no-rslora``, lists as repeated or bracketed
values instead of one comma-separated string, other error messages and exit codes), which would break every
command line, script and test written against ``rankrl``.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import typer

from rankrl.settings import PANELS, REQUIRED, option_flags

T = TypeVar("T")
_SCALARS = (bool, int, float, str)


def option_type(annotation: Any) -> type:
    """The type Typer parses an option as: the scalar of ``int | None``; ``str`` for lists (comma-separated)."""
    if annotation in _SCALARS:
        return annotation
    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(args) == 1:
        return option_type(args[0])
    return str


def field_default(item: Field) -> Any:
    """The dataclass default of a field (calling its factory)."""
    return item.default_factory() if item.default_factory is not MISSING else item.default


def option_default(item: Field) -> Any:
    """The option's default: the field's (lists as their comma-separated text), or its ``cli_default``."""
    cli_default = item.metadata.get("cli_default", MISSING)
    if cli_default is REQUIRED:
        return ...
    if cli_default is not MISSING:
        return cli_default
    default = field_default(item)
    if isinstance(default, list):
        return ",".join(str(value) for value in default) or None
    return default


def make_option(item: Field, annotation: Any) -> inspect.Parameter:
    """The keyword parameter, with its ``typer.Option``, of one dataclass field."""
    metadata = item.metadata
    if "help" not in metadata:
        raise TypeError(f"field {item.name!r} has no help metadata (use rankrl.settings.setting)")
    option = typer.Option(option_default(item), *option_flags(item).split(), help=metadata["help"],
                          rich_help_panel=metadata.get("panel"))
    return inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                             annotation=option_type(annotation))


def options_from(cls: type) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a Typer command so that every field of ``cls`` is one of its options.

    The command declares its own options (what is not a setting) and ``**options``; its own options come after
    the generated ones (one named like a field replaces it). The generated options are ordered by help panel
    (:data:`rankrl.settings.PANELS`), then by field order. The command receives every option as a keyword.
    """

    def decorate(command: Callable[..., T]) -> Callable[..., T]:
        own = {name: parameter for name, parameter in inspect.signature(command, eval_str=True).parameters.items()
               if parameter.kind is not inspect.Parameter.VAR_KEYWORD}
        hints = get_type_hints(cls)
        items = [item for item in fields(cls) if item.name not in own]
        items.sort(key=lambda item: PANELS.index(item.metadata.get("panel", PANELS[-1])))
        generated = [make_option(item, hints[item.name]) for item in items]
        parameters = generated + [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY) for parameter in own.values()]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> T:
            return command(**kwargs)

        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        del wrapper.__wrapped__  # Typer reads the signature above, not the command's own
        return wrapper

    return decorate


def build_config(cls: type[T], kwargs: dict[str, Any]) -> T:
    """The ``cls`` of a command's options: each field's option parsed (``parse`` metadata), the rest ignored.

    Raises:
        ValueError: an option's text does not parse (the message names the flag).
    """
    values = {}
    for item in fields(cls):
        if item.name in kwargs:
            value = kwargs[item.name]
            parse = item.metadata.get("parse")
            values[item.name] = parse(value) if parse is not None and isinstance(value, str | None) else value
    return cls(**values)
