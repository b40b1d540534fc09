"""Run directories: one per run, never overwritten, each holding its resolved config."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
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
    pattern = re.compile(rf"{re.escape(stem)}_(\d+)")
    taken = [int(m.group(1)) for p in root.glob(f"{stem}_*") if (m := pattern.fullmatch(p.name))]
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


class NotWritableError(OSError):
    """An output path rankrl cannot create or write (read-only, or a file where a directory should be)."""


def check_writable(path: str | Path, flag: str = "--out") -> None:
    """Refuse, before any work, an output directory that cannot be created or written.

    The nearest existing ancestor must be a writable directory (``os.access``; for the root user, who may
    write anywhere, a failing ``mkdir`` still gives the same one clear error where it happens).
    """
    path = Path(path).absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise NotWritableError(f"{flag} {path}: {probe} is a file, not a directory; choose another {flag}.")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise NotWritableError(f"{flag} {path}: {probe} is not writable (read-only or owned by another user); "
                               f"choose another {flag}.")


def write_config(run_dir: Path, config: dict) -> Path:
    """Write the resolved configuration of a run as JSON."""
    text = json.dumps(config, indent=2, sort_keys=True, default=str) + "\n"
    return atomic_write_text(Path(run_dir) / CONFIG_FILE, text)


def read_config(run_dir: str | Path) -> dict:
    """Read a run's resolved configuration."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no {CONFIG_FILE}: it is not a rankrl run directory.")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); it is damaged.") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object; it is damaged.")
    return config


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` then rename ``tmp`` over ``path`` (same directory), so ``path`` is whole or absent.

    A kill during ``write`` leaves only a hidden ``.NAME.tmp-PID`` file, never a truncated ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        if tmp.is_file():
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # some writers create 0600 files; a run's outputs are ordinary files
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.is_file():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (checkpoint and policy weights are checked against it)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
