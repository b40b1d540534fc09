"""Run directories: one per run, never overwritten, each holding its resolved config."""

from __future__ import annotations

import json
import re
from pathlib import Path

CONFIG_FILE = "config.json"


class RunDirectoryExistsError(FileExistsError):
    """A run directory that already exists was named explicitly."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def new_run_dir(root: str | Path, name: str) -> Path:
    """Create ``root/<name>_<n>`` with the smallest free ``n`` (atomic: two runs never share one)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stem = _slug(name)
    taken = [int(m.group(1)) for p in root.glob(f"{stem}_*") if (m := re.fullmatch(rf"{re.escape(stem)}_(\d+)", p.name))]
    n = max(taken, default=0) + 1
    while True:
        path = root / f"{stem}_{n}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def claim_run_dir(path: str | Path) -> Path:
    """Create an explicitly named run directory; refuse one that exists and is not empty."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise RunDirectoryExistsError(
            f"Run directory {path} already exists and is not empty; rankrl never overwrites a run. "
            "Choose another --out, delete it yourself, or pass --resume to continue it."
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_config(run_dir: Path, config: dict) -> Path:
    """Write the resolved configuration of a run as JSON."""
    path = Path(run_dir) / CONFIG_FILE
    path.write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_config(run_dir: str | Path) -> dict:
    """Read a run's resolved configuration."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no {CONFIG_FILE}: it is not a rankrl run directory.")
    return json.loads(path.read_text())
