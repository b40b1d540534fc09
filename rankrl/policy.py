"""Rank policies as data: weights in safetensors, architecture and spaces in JSON, no unpickling.

A stable-baselines3 ``.zip`` can carry pickled Python objects (its ``data`` entry serialises spaces,
schedules and classes with cloudpickle), and loading one runs whatever they hold. rankrl therefore loads a
policy from two plain files instead:

* ``policy.json``: the format version, the SB3 algorithm, the policy class and its constructor options
  (``net_arch``, the activation by name, ...), the observation space (bounds, and the feature layout the
  trainer recorded), the action space (``MultiDiscrete`` ``nvec``), a SHA-256 of the weights and a
  free-form ``metadata`` dict (rank grid, deltas, ``env_id``, evaluations);
* ``policy.safetensors``: the policy network's ``state_dict``.

:func:`load_policy_data` rebuilds SB3's ``ActorCriticPolicy`` from the spec (every option checked against a
short allow-list) and loads the weights with safetensors; nothing in either file can run code.

A bare SB3 zip is loaded only when the caller says it trusts it (``trust_policy=True``, ``--trust-policy``),
and then through SB3's own loader; :func:`convert_policy` (``rankrl policy convert``) turns a trusted zip into
the data format once.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rankrl.env.observation import ObservationLayout
from rankrl.runs import atomic_write, file_sha256

POLICY_FILE = "policy.zip"
SPEC_FILE = "policy.json"
WEIGHTS_FILE = "policy.safetensors"
FEATURES_FILE = "features.json"
METADATA_FILE = "metadata.json"
FORMAT = "rankrl-policy"
FORMAT_VERSION = 1
TRUST_HINT = ("A stable-baselines3 zip can run arbitrary code when it is loaded (it holds pickled objects). "
              "Load it only if you trust where it came from: pass --trust-policy (trust_policy=True), or convert "
              "it once with `rankrl policy convert --trust-policy ZIP DIR` and share DIR.")

# The only classes a policy file may name: looked up here, never imported from a string in the file.
ACTIVATIONS = ("Tanh", "ReLU", "LeakyReLU", "ELU", "GELU", "SiLU", "Sigmoid", "Identity")
POLICY_CLASSES = ("ActorCriticPolicy",)
ALGORITHMS = ("PPO", "A2C")
_POLICY_OPTIONS = ("net_arch", "activation_fn", "ortho_init", "share_features_extractor", "normalize_images")


class PolicyFileError(ValueError):
    """A policy file that is missing, corrupt, untrusted, or made for another observation layout."""


@dataclass
class LoadedPolicy:
    """A policy rebuilt from its files.

    Attributes:
        policy: The SB3 ``ActorCriticPolicy`` (``predict``, ``get_distribution``, ``obs_to_tensor``).
        path: The file it was loaded from (``policy.json``, or a trusted zip).
        features: The observation layout recorded with it (``{"num_groups", "features"}``), ``{}`` if none.
        metadata: The free-form metadata recorded with it.
        spec: The whole ``policy.json`` content (rebuilt from the zip for a trusted zip).
    """

    policy: object
    path: Path
    features: dict
    metadata: dict
    spec: dict = field(default_factory=dict)

    @property
    def action_space(self):
        return self.policy.action_space

    @property
    def observation_space(self):
        return self.policy.observation_space


# ---------------------------------------------------------------------------------------------- shipped policies
def shipped_policy_dirs() -> list[Path]:
    """Folders of the policies shipped with rankrl.

    ``policies/`` in a checkout, ``rankrl/shipped/policies`` in a wheel.
    """
    package = Path(__file__).resolve().parent
    return [d for d in (package.parent / "policies", package / "shipped" / "policies") if d.is_dir()]


def list_shipped_policies() -> list[str]:
    """Names of the shipped policies (``learned:NAME``)."""
    return sorted({d.name for folder in shipped_policy_dirs() for d in folder.iterdir() if (d / SPEC_FILE).exists()})


def shipped_policy(name: str = "default") -> Path:
    """The directory of the shipped policy ``name`` (``learned`` alone means ``learned:default``)."""
    for folder in shipped_policy_dirs():
        if (folder / name / SPEC_FILE).exists():
            return folder / name
    known = ", ".join(list_shipped_policies()) or "none"
    raise PolicyFileError(f"No shipped policy named {name!r} (shipped: {known}). Pass a policy directory from "
                          "`rankrl train` (or a policy.zip) as learned:PATH.")


# ---------------------------------------------------------------------------------------------- resolving
def resolve_policy_path(path: str | Path, trust_policy: bool = False) -> Path:
    """The file a policy path means: ``policy.json`` of a directory (else its ``policy.zip``), a ``.json`` or
    ``.safetensors`` file's spec, a ``.zip``'s data-format sibling (``X.zip`` -> ``X.json``) when there is one,
    else the zip itself. A shipped name (``default``) means that shipped policy.

    Raises:
        PolicyFileError: nothing there, or only a zip and ``trust_policy`` is not set (nothing is opened).
    """
    if isinstance(path, str) and path in list_shipped_policies() and not Path(path).exists():
        path = shipped_policy(path)
    path = Path(path)
    if path.is_dir():
        path = path / SPEC_FILE if (path / SPEC_FILE).exists() else path / POLICY_FILE
    elif path.suffix == ".safetensors" or (path.suffix == ".zip" and path.with_suffix(".json").exists()):
        path = path.with_suffix(".json")
    if not path.exists():
        raise PolicyFileError(f"No policy at {path}. Pass a policy directory from `rankrl train` (policy.json and "
                              "policy.safetensors), or a policy.zip with --trust-policy.")
    if path.suffix != ".json" and not trust_policy:
        raise PolicyFileError(f"{path} is a bare stable-baselines3 zip and was not loaded. {TRUST_HINT}")
    return path


def load_policy(path: str | Path, layout: ObservationLayout | None = None, device: str = "cpu",
                trust_policy: bool = False) -> LoadedPolicy:
    """Load a policy (see :func:`resolve_policy_path`) and check it against ``layout``.

    Raises:
        PolicyFileError: missing, corrupt or untrusted files, or an observation space of another size.
        ObservationMismatchError: a policy recorded for another observation layout or number of groups.
    """
    path = resolve_policy_path(path, trust_policy=trust_policy)
    if path.suffix == ".json":
        loaded = load_policy_data(path, device=device, layout=layout)
    else:
        loaded = _load_trusted_zip(path, device=device, layout=layout)
    shape = getattr(loaded.observation_space, "shape", None)
    if layout is not None and shape != (len(layout.names),):
        raise PolicyFileError(
            f"The policy {path} observes {shape} features but this run builds {len(layout.names)} "
            f"({layout.num_groups} groups). Use a policy trained with num_groups={layout.num_groups}."
        )
    return loaded


def read_policy_spec(path: str | Path) -> dict:
    """The checked ``policy.json`` (or the spec a directory / zip path resolves to); no weights are read."""
    path = Path(path)
    if path.is_dir():
        path = path / SPEC_FILE
    spec = read_json_file(path, "policy spec")
    _check_spec(spec, path)
    return spec


# ---------------------------------------------------------------------------------------------- the data format
def save_policy_data(policy, directory: str | Path, metadata: dict | None = None, *, layout: dict | None = None,
                     algo: str | None = None, stem: str = "policy") -> Path:
    """Write ``policy`` (an SB3 algorithm or its ``ActorCriticPolicy``) as ``<stem>.safetensors`` + ``<stem>.json``.

    Both files are written to temporary names and renamed, the weights first, so a reader never sees a spec
    whose weights are half-written.

    Args:
        policy: ``model`` (PPO / A2C) or ``model.policy``.
        directory: Where the two files go (created).
        metadata: Free-form JSON-serialisable dict recorded as ``metadata`` (rank grid, deltas, env id, ...).
        layout: The observation layout (``ObservationLayout.to_dict()`` or any dict with ``features`` names).
        algo: The SB3 algorithm name (default: the class name of ``policy`` when it is an algorithm).
        stem: File stem (``policy``, ``best_policy``).

    Returns:
        The spec file's path.
    """
    from safetensors.torch import save_file

    if hasattr(policy, "policy") and hasattr(policy, "learn"):
        algo = algo or type(policy).__name__
        policy = policy.policy
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    params = policy._get_constructor_parameters()
    if type(policy).__name__ not in POLICY_CLASSES:
        raise PolicyFileError(f"Only {', '.join(POLICY_CLASSES)} policies can be saved as data, not "
                              f"{type(policy).__name__}.")
    if params.get("use_sde"):
        raise PolicyFileError("Policies with state-dependent exploration (use_sde) are not supported as data.")
    extractor = params.get("features_extractor_class")
    if extractor is not None and extractor.__name__ != "FlattenExtractor":
        raise PolicyFileError(f"Only the default FlattenExtractor can be saved as data, not {extractor.__name__}.")
    activation = params["activation_fn"].__name__
    if activation not in ACTIVATIONS:
        raise PolicyFileError(f"Activation {activation} is not one of {', '.join(ACTIVATIONS)}.")
    options = {key: params[key] for key in _POLICY_OPTIONS if key in params}
    options["activation_fn"] = activation
    options["net_arch"] = _plain(options.get("net_arch"))
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in policy.state_dict().items()}
    weights = directory / f"{stem}.safetensors"
    atomic_write(weights, lambda tmp: save_file(state, str(tmp)))
    spec = {
        "format": FORMAT, "version": FORMAT_VERSION, "algo": algo or "PPO", "policy_class": type(policy).__name__,
        "policy_kwargs": options,
        "observation_space": _space_to_dict(policy.observation_space),
        "action_space": _space_to_dict(policy.action_space),
        "observation_layout": _plain(layout) if layout is not None else None,
        "weights": weights.name, "weights_sha256": file_sha256(weights),
        "metadata": _plain(metadata or {}),
    }
    path = directory / f"{stem}.json"
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(spec, indent=1) + "\n"))
    return path


def load_policy_data(path: str | Path, device: str = "cpu", layout: ObservationLayout | None = None) -> LoadedPolicy:
    """Rebuild a policy saved by :func:`save_policy_data` (a spec file or the directory holding ``policy.json``).

    Raises:
        PolicyFileError: a missing or malformed spec, an option outside the allow-list, weights that are
            missing, altered (checksum) or of another shape.
        ObservationMismatchError: ``layout`` given and the recorded layout differs.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from stable_baselines3.common.policies import ActorCriticPolicy

    path = Path(path)
    if path.is_dir():
        path = path / SPEC_FILE
    spec = read_policy_spec(path)
    features = spec.get("observation_layout") or {}
    if layout is not None and features:
        layout.check(features, source=f"The policy {path}")
    weights = path.parent / spec["weights"]
    if not weights.is_file():
        raise PolicyFileError(f"{path} names the weights {weights.name}, which are not beside it.")
    if file_sha256(weights) != spec["weights_sha256"]:
        raise PolicyFileError(f"{weights} does not match the checksum in {path} (altered or half-written); "
                              "re-export the policy.")
    kwargs = dict(spec["policy_kwargs"])
    import torch

    kwargs["activation_fn"] = getattr(torch.nn, kwargs["activation_fn"])
    try:
        policy = ActorCriticPolicy(_space_from_dict(spec["observation_space"], path),
                                   _space_from_dict(spec["action_space"], path), lambda _: 0.0, **kwargs)
        state = load_file(str(weights), device="cpu")
        policy.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError, SafetensorError) as err:
        raise PolicyFileError(f"{path}: the weights do not fit the recorded architecture ({type(err).__name__}: "
                              f"{str(err).splitlines()[0]}).") from err
    policy = policy.to(device)
    policy.set_training_mode(False)
    return LoadedPolicy(policy=policy, path=path, features=features, metadata=dict(spec.get("metadata") or {}),
                        spec=spec)


def convert_policy(source: str | Path, destination: str | Path, trust_policy: bool = False) -> Path:
    """Convert a trusted SB3 zip (PPO / A2C, with ``features.json`` / ``metadata.json`` beside it if any) to the
    data format in ``destination``; return the spec path.

    Raises:
        PolicyFileError: ``trust_policy`` not set, the zip cannot be loaded, or ``destination`` holds a policy.
    """
    source = Path(source)
    if source.is_dir():
        source = source / POLICY_FILE
    if not source.is_file():
        raise PolicyFileError(f"No policy zip at {source}.")
    if not trust_policy:
        raise PolicyFileError(f"{source} was not loaded. {TRUST_HINT}")
    destination = Path(destination)
    if (destination / SPEC_FILE).exists():
        raise PolicyFileError(f"{destination / SPEC_FILE} exists; rankrl never overwrites a policy. Choose another "
                              "destination.")
    loaded = _load_trusted_zip(source, device="cpu", layout=None)
    return save_policy_data(loaded.policy, destination, loaded.metadata, layout=loaded.features or None,
                            algo=loaded.spec.get("algo"))


# ---------------------------------------------------------------------------------------------- trusted zips
def _load_trusted_zip(path: Path, device: str, layout: ObservationLayout | None) -> LoadedPolicy:
    """SB3's loader, for a zip the user said they trust (it unpickles)."""
    if not zipfile.is_zipfile(path):
        raise PolicyFileError(f"{path} is not a stable-baselines3 zip (corrupt or another format). Re-export it "
                              "with `rankrl train`.")
    features_path = path.parent / FEATURES_FILE
    features = read_json_file(features_path, "observation layout") if features_path.exists() else {}
    metadata_path = path.parent / METADATA_FILE
    metadata = read_json_file(metadata_path, "policy metadata") if metadata_path.exists() else {}
    if features and layout is not None:
        layout.check(features, source=f"The policy {path}")
    algo = metadata.get("algo") or zip_algorithm(path)
    if algo not in ALGORITHMS:
        raise PolicyFileError(f"{path}: unknown algorithm {algo!r} in {metadata_path}.")
    import stable_baselines3

    try:
        model = getattr(stable_baselines3, algo).load(path, device=device)
    except Exception as err:  # SB3 raises many kinds for a damaged zip
        raise PolicyFileError(f"{path} could not be loaded by stable-baselines3 "
                              f"({type(err).__name__}: {err}).") from err
    model.policy.set_training_mode(False)
    return LoadedPolicy(policy=model.policy, path=path, features=features, metadata=metadata, spec={"algo": algo})


def zip_algorithm(path: Path) -> str:
    """The algorithm of a zip without metadata.json: PPO's saved data has ``clip_range``, A2C's does not."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (KeyError, ValueError, zipfile.BadZipFile) as err:
        raise PolicyFileError(f"{path} is not a stable-baselines3 zip ({err}).") from err
    return "PPO" if "clip_range" in data else "A2C"


# ---------------------------------------------------------------------------------------------- helpers
def read_json_file(path: Path, what: str) -> dict:
    """A JSON object from ``path``; a clear error naming the file when it is unreadable or not an object."""
    try:
        value = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PolicyFileError(f"No {what} at {path}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PolicyFileError(f"{path} ({what}) is not valid JSON: {err}. Re-export the policy with "
                              "`rankrl train` or `rankrl policy convert`.") from None
    if not isinstance(value, dict):
        raise PolicyFileError(f"{path} ({what}) must hold a JSON object, not {type(value).__name__}.")
    return value


def _check_spec(spec: dict, path: Path) -> None:
    def bad(detail: str) -> PolicyFileError:
        return PolicyFileError(f"{path} is not a usable rankrl policy spec: {detail}.")

    if spec.get("format") != FORMAT:
        raise bad(f"format is {spec.get('format')!r}, expected {FORMAT!r}")
    if spec.get("version") != FORMAT_VERSION:
        raise bad(f"version {spec.get('version')!r}; this rankrl reads version {FORMAT_VERSION}")
    if spec.get("policy_class") not in POLICY_CLASSES:
        raise bad(f"policy_class {spec.get('policy_class')!r} is not one of {', '.join(POLICY_CLASSES)}")
    if spec.get("algo") not in ALGORITHMS:
        raise bad(f"algo {spec.get('algo')!r} is not one of {', '.join(ALGORITHMS)}")
    kwargs = spec.get("policy_kwargs")
    if not isinstance(kwargs, dict) or set(kwargs) - set(_POLICY_OPTIONS):
        raise bad(f"policy_kwargs may hold only {', '.join(_POLICY_OPTIONS)}")
    if kwargs.get("activation_fn", "Tanh") not in ACTIVATIONS:
        raise bad(f"activation {kwargs.get('activation_fn')!r} is not one of {', '.join(ACTIVATIONS)}")
    kwargs.setdefault("activation_fn", "Tanh")
    if not _valid_net_arch(kwargs.get("net_arch")):
        raise bad(f"net_arch {kwargs.get('net_arch')!r} is not a list of layer sizes or a pi/vf dict")
    for key in ("ortho_init", "share_features_extractor", "normalize_images"):
        if key in kwargs and not isinstance(kwargs[key], bool):
            raise bad(f"{key} must be true or false")
    weights = spec.get("weights")
    if not isinstance(weights, str) or Path(weights).name != weights or not weights.endswith(".safetensors"):
        raise bad("weights must name a .safetensors file beside it")
    if not isinstance(spec.get("weights_sha256"), str):
        raise bad("weights_sha256 is missing")
    for key in ("observation_space", "action_space"):
        if not isinstance(spec.get(key), dict):
            raise bad(f"{key} is missing")
    if spec.get("metadata") is not None and not isinstance(spec["metadata"], dict):
        raise bad("metadata must be a JSON object")


def _valid_net_arch(arch) -> bool:
    def sizes(value) -> bool:
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65536
                                               for v in value)

    if arch is None or sizes(arch):
        return True
    return isinstance(arch, dict) and set(arch) <= {"pi", "vf"} and all(sizes(v) for v in arch.values())


def _space_to_dict(space) -> dict:
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": space.low.reshape(-1).tolist(), "high": space.high.reshape(-1).tolist()}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": np.asarray(space.nvec).reshape(-1).tolist()}
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    raise PolicyFileError(f"Space {space} cannot be saved as data (Box, MultiDiscrete and Discrete can).")


def _space_from_dict(data: dict, path: Path):
    from gymnasium import spaces

    kind = data.get("type")
    try:
        if kind == "Box":
            shape = tuple(int(s) for s in data["shape"])
            if data.get("dtype", "float32") not in ("float32", "float64"):
                raise ValueError(f"dtype {data.get('dtype')!r}")
            low = np.asarray([_bound(v) for v in data["low"]], dtype=np.float32).reshape(shape)
            high = np.asarray([_bound(v) for v in data["high"]], dtype=np.float32).reshape(shape)
            return spaces.Box(low, high, shape=shape, dtype=np.dtype(data.get("dtype", "float32")))
        if kind == "MultiDiscrete":
            nvec = [int(n) for n in data["nvec"]]
            if not nvec or min(nvec) < 1:
                raise ValueError("nvec must hold positive sizes")
            return spaces.MultiDiscrete(nvec)
        if kind == "Discrete":
            return spaces.Discrete(int(data["n"]))
    except (KeyError, TypeError, ValueError) as err:
        raise PolicyFileError(f"{path}: malformed {kind} space ({err}).") from None
    raise PolicyFileError(f"{path}: space type {kind!r} is not one of Box, MultiDiscrete, Discrete.")


def _bound(value) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"bound {value!r} is not a number")
    return float(value) if math.isfinite(value) else float(value)


def _plain(value):
    """``value`` as plain JSON types (tuples become lists, numpy scalars numbers)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
