"""Declarative preset files (YAML) loaded into typed dataclasses, strictly.

Environment presets live in ``envs/`` and agent presets in ``agents/`` at the top of the repository; the
wheel ships both inside the package (``rankrl/shipped/envs``, ``rankrl/shipped/agents``), so an installed
rankrl finds them by name. A path to a file works everywhere a preset name does.

Loading is strict: an unknown key or a value of the wrong type fails with the file and the key named.
Nothing is evaluated: values are plain YAML scalars, lists and mappings.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class PresetError(ValueError):
    """A preset that does not exist or does not match its schema."""


def preset_dirs(kind: str) -> list[Path]:
    """Folders searched for presets of ``kind`` (``"envs"`` or ``"agents"``): the checkout, then the wheel."""
    package = Path(__file__).resolve().parent
    return [d for d in (package.parent / kind, package / "shipped" / kind) if d.is_dir()]


def list_presets(kind: str) -> list[str]:
    """Names of the shipped presets of ``kind``."""
    names = set()
    for folder in preset_dirs(kind):
        names.update(p.stem for p in folder.glob("*.yaml"))
    return sorted(names)


def find_preset(kind: str, name: str | Path) -> Path:
    """Path of preset ``name`` (a shipped name or a file path)."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    for folder in preset_dirs(kind):
        path = folder / f"{name}.yaml"
        if path.exists():
            return path
    known = ", ".join(list_presets(kind)) or "(none)"
    raise PresetError(f"Unknown {kind[:-1]} preset '{name}'. Known presets: {known}; or pass a path to a .yaml file.")


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping, with the file named in any error."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise PresetError(f"{path}: not valid YAML ({err}).") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PresetError(f"{path}: expected a mapping of keys to values at the top level.")
    return data


def from_mapping(cls: type[T], data: dict, source: str, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking every key and type (nested dataclasses too)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise PresetError(
            f"{source}: unknown key {prefix}{unknown[0]!s}"
            f"{' (and ' + ', '.join(prefix + u for u in unknown[1:]) + ')' if len(unknown) > 1 else ''}. "
            f"Valid keys: {', '.join(prefix + k for k in fields)}."
        )
    values = {}
    for key, value in data.items():
        values[key] = _coerce(hints[key], value, source, f"{prefix}{key}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise PresetError(f"{source}: {err}") from err


def _coerce(hint: Any, value: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, source, key)
            except PresetError as err:
                errors.append(err)
        raise errors[0]
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise PresetError(f"{source}: key {key} must be a mapping, got {type(value).__name__} {value!r}.")
        return from_mapping(hint, value, source, prefix=f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise PresetError(f"{source}: key {key} must be a list, got {type(value).__name__} {value!r}.")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise PresetError(f"{source}: key {key} must be a mapping, got {type(value).__name__} {value!r}.")
        return {str(k): _coerce(args[1] if args else Any, v, source, f"{key}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise PresetError(f"{source}: key {key} must be true or false, got {value!r}.")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise PresetError(f"{source}: key {key} must be an integer, got {type(value).__name__} {value!r}.")
    if hint in (float, str) and not isinstance(value, hint):
        raise PresetError(f"{source}: key {key} must be a {hint.__name__}, got {type(value).__name__} {value!r}.")
    return value


def to_mapping(obj: Any) -> dict:
    """A dataclass as plain data (for writing resolved configs)."""
    return dataclasses.asdict(obj)
