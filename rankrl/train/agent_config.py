"""Agent presets (``agents/*.yaml``): an SB3 algorithm, its hyperparameters and per-environment overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rankrl.presets import PresetError, find_preset, from_mapping, read_yaml


@dataclass
class PPOParams:
    """stable-baselines3 PPO arguments rankrl exposes."""

    learning_rate: float = 3e-4
    n_steps: int = 128
    batch_size: int = 64
    n_epochs: int = 10
    gamma: float = 0.95
    gae_lambda: float = 0.9
    clip_range: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5


@dataclass
class A2CParams:
    """stable-baselines3 A2C arguments rankrl exposes."""

    learning_rate: float = 7e-4
    n_steps: int = 8
    gamma: float = 0.95
    gae_lambda: float = 1.0
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5


ALGORITHMS: dict[str, type] = {"PPO": PPOParams, "A2C": A2CParams}


@dataclass
class AgentConfig:
    """A resolved agent preset: hyperparameters already merged with the environment's overrides."""

    name: str
    algo: str
    hyperparams: PPOParams | A2CParams
    policy: str = "MlpPolicy"
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    eval_freq: int = 1024
    eval_episodes: int = 3
    checkpoint_freq: int = 1024

    def to_dict(self) -> dict:
        return asdict(self)

    def algorithm_class(self):
        """The stable-baselines3 class."""
        import stable_baselines3

        return getattr(stable_baselines3, self.algo)


@dataclass
class _AgentFile:
    algo: str
    policy: str = "MlpPolicy"
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    hyperparams: dict[str, Any] = field(default_factory=dict)
    env_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_freq: int = 1024
    eval_episodes: int = 3
    checkpoint_freq: int = 1024


def load_agent_config(agent: str | Path, env_name: str | None = None) -> AgentConfig:
    """Load an agent preset by name or path, applying the overrides for ``env_name``.

    Raises:
        PresetError: unknown preset, unknown algorithm, unknown or mistyped key (file and key named).
    """
    path = find_preset("agents", agent)
    raw = from_mapping(_AgentFile, read_yaml(path), str(path))
    if raw.algo not in ALGORITHMS:
        raise PresetError(f"{path}: algo must be one of {', '.join(ALGORITHMS)}, got {raw.algo!r}.")
    params = dict(raw.hyperparams)
    if env_name is not None:
        params.update(raw.env_overrides.get(env_name, {}))
    hyperparams = from_mapping(ALGORITHMS[raw.algo], params, str(path), prefix="hyperparams.")
    for key in ("eval_freq", "eval_episodes", "checkpoint_freq"):
        if getattr(raw, key) < 1:
            raise PresetError(f"{path}: {key} must be >= 1, got {getattr(raw, key)}.")
    return AgentConfig(name=path.stem, algo=raw.algo, hyperparams=hyperparams, policy=raw.policy,
                       net_arch=list(raw.net_arch), eval_freq=raw.eval_freq, eval_episodes=raw.eval_episodes,
                       checkpoint_freq=raw.checkpoint_freq)
