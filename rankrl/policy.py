"""Load a trained rank policy safely: SB3's own loader, after checking the observation layout it expects.

A policy file is code: stable-baselines3 zips can carry pickled Python objects, and loading one can run
them. Load only policies you trust. rankrl never unpickles a policy itself; it calls SB3's loader.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rankrl.env.observation import ObservationLayout

POLICY_FILE = "policy.zip"
FEATURES_FILE = "features.json"
METADATA_FILE = "metadata.json"


class PolicyFileError(ValueError):
    """A policy file that is missing, corrupt, or made for another observation layout."""


@dataclass
class LoadedPolicy:
    """A trained policy with the layout and metadata saved beside it."""

    model: object
    path: Path
    features: dict
    metadata: dict


def shipped_policy_dirs() -> list[Path]:
    """Folders of the policies shipped with rankrl: ``policies/`` in a checkout, ``rankrl/shipped/policies`` in a wheel."""
    package = Path(__file__).resolve().parent
    return [d for d in (package.parent / "policies", package / "shipped" / "policies") if d.is_dir()]


def list_shipped_policies() -> list[str]:
    """Names of the shipped policies (``learned:NAME``)."""
    return sorted({d.name for folder in shipped_policy_dirs() for d in folder.iterdir() if (d / POLICY_FILE).exists()})


def shipped_policy(name: str = "default") -> Path:
    """The run directory of the shipped policy ``name`` (``learned`` alone means ``learned:default``)."""
    for folder in shipped_policy_dirs():
        if (folder / name / POLICY_FILE).exists():
            return folder / name
    known = ", ".join(list_shipped_policies()) or "none"
    raise PolicyFileError(f"No shipped policy named {name!r} (shipped: {known}). Pass a policy.zip or run "
                          "directory from `rankrl train` as learned:PATH.")


def resolve_policy_path(path: str | Path) -> Path:
    """A run directory means its ``policy.zip``; a file is taken as is; a bare shipped name (``default``) means
    that shipped policy."""
    if isinstance(path, str) and path in list_shipped_policies() and not Path(path).exists():
        path = shipped_policy(path)
    path = Path(path)
    if path.is_dir():
        path = path / POLICY_FILE
    if not path.exists():
        raise PolicyFileError(f"No policy at {path}. Pass a policy.zip or a run directory from `rankrl train`.")
    return path


def load_policy(path: str | Path, layout: ObservationLayout, device: str = "cpu") -> LoadedPolicy:
    """Load a policy for ``layout``; raise :class:`PolicyFileError` before loading when it cannot fit.

    The layout comes from ``features.json`` beside the zip (written by ``rankrl train``). Without it the
    layout is checked against the observation space stored in the zip.
    """
    path = resolve_policy_path(path)
    if not zipfile.is_zipfile(path):
        raise PolicyFileError(f"{path} is not a stable-baselines3 zip (corrupt or another format). Re-export it "
                              "with `rankrl train`.")
    features_path = path.parent / FEATURES_FILE
    features = json.loads(features_path.read_text()) if features_path.exists() else {}
    metadata_path = path.parent / METADATA_FILE
    metadata = json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
    if features:
        layout.check(features, source=f"The policy {path}")
    algo = metadata.get("algo") or _algo_from_zip(path)
    import stable_baselines3

    algorithm = getattr(stable_baselines3, algo, None)
    if algorithm is None:
        raise PolicyFileError(f"{path}: unknown algorithm {algo!r} in its metadata.")
    try:
        model = algorithm.load(path, device=device)
    except Exception as err:  # SB3 raises many kinds for a damaged zip
        raise PolicyFileError(f"{path} could not be loaded by stable-baselines3 ({type(err).__name__}: {err}).") from err
    shape = getattr(model.observation_space, "shape", None)
    if shape != (len(layout.names),):
        raise PolicyFileError(
            f"The policy {path} observes {shape} features but this run builds {len(layout.names)} "
            f"({layout.num_groups} groups). Use a policy trained with num_groups={layout.num_groups}."
        )
    return LoadedPolicy(model=model, path=path, features=features, metadata=metadata)


def _algo_from_zip(path: Path) -> str:
    """The algorithm of a zip without metadata.json: PPO's saved data has ``clip_range``, A2C's does not."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (KeyError, ValueError, zipfile.BadZipFile) as err:
        raise PolicyFileError(f"{path} is not a stable-baselines3 zip ({err}).") from err
    return "PPO" if "clip_range" in data else "A2C"
