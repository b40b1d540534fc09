"""Environment presets: one YAML file in ``envs/`` per environment, loaded into :class:`EnvConfig`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rankrl.env.registration import ENV_VERSION, env_id
from rankrl.presets import PresetError, find_preset, from_mapping, read_yaml
from rankrl.session import SessionConfig


@dataclass
class RewardWeights:
    """Weights of the reward's parts (see :class:`~rankrl.env.LoRARankEnv`)."""

    accuracy: float = field(default=1.0, metadata={"help": "Weight of the eval-accuracy gain."})
    memory: float = field(default=0.05, metadata={"help": "Episode cost of using the whole reference memory "
                                                          "throughout (mean used / reference)."})
    time: float = field(default=0.02, metadata={"help": "Episode cost of a full-depth backward throughout "
                                                        "(mean backward depth fraction, a step-time proxy)."})
    wall: float = field(default=0.02, metadata={"help": "Penalty per decision the wall cut or forced."})
    divergence: float = field(default=1.0, metadata={"help": "Penalty when training diverges (NaN/inf loss)."})


@dataclass
class EnvConfig:
    """Everything that defines a :class:`~rankrl.env.LoRARankEnv`."""

    name: str = field(default="custom", metadata={"help": "Preset name (registered as rankrl/<name>-v3)."})
    description: str = field(default="", metadata={"help": "One line for listings."})
    model: str = field(default="tiny", metadata={"help": "'tiny', 'default' (MiniLM-L6), a directory or hub name."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Cut the model to its first N layers."})
    tasks: list[str] = field(default_factory=lambda: ["synthetic:keyword"], metadata={"help": "Task family."})
    num_groups: int = field(default=2, metadata={"help": "Layer groups G (action and observation size)."})
    split_by_kind: bool = field(default=False, metadata={"help": "Split groups into attention and MLP."})
    r_max: int = field(default=16, metadata={"help": "Largest rank of a group."})
    rank_init: int = field(default=8, metadata={"help": "Rank of every group at reset."})
    rank_step: int = field(default=2, metadata={"help": "Rank change of one action level."})
    action_levels: int = field(default=3, metadata={"help": "Odd number of deltas per group: 3 = {-s, 0, +s}."})
    steps_per_action: int = field(default=10, metadata={"help": "K: optimizer steps between decisions."})
    eval_size: int = field(default=128, metadata={"help": "Held-out examples evaluated after each decision."})
    episode_length: int = field(default=8, metadata={"help": "Decisions per episode (max_episode_steps)."})
    budget_mb: float | None = field(default=None, metadata={"help": "Absolute memory budget in MiB."})
    budget_frac: float = field(default=1.0, metadata={"help": "Budget as a fraction of the reference memory "
                                                               "(whole model training at rank_init)."})
    budget_range: list[float] | None = field(default=None, metadata={
        "help": "[low, high]: each episode draws its budget fraction uniformly from it (instead of budget_frac)."})
    traces: list[str] = field(default_factory=lambda: ["constant"], metadata={
        "help": "Availability traces drawn per episode (constant, step-down, step-up, spike, sawtooth)."})
    memory_scope: str = field(default="adapter", metadata={"help": "'adapter' (rank-dependent) or 'total'."})
    reward: RewardWeights = field(default_factory=RewardWeights)
    batch_size: int = field(default=16, metadata={"help": "Training batch size."})
    max_length: int = field(default=48, metadata={"help": "Tokens per example."})
    train_size: int | None = field(default=None, metadata={"help": "Cap on training examples per task."})
    lr: float = field(default=1e-3,
                      metadata={"help": "AdamW learning rate (3e-3 collapses tiny-model runs to chance)."})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA alpha."})
    use_rslora: bool = field(default=False, metadata={"help": "rsLoRA scaling alpha/sqrt(r) instead of alpha/r."})
    prefix_cache: bool = field(default=True, metadata={
        "help": "Reuse the hidden states of bottom layers without adapters across steps and episodes (exact: "
                "only with no dropout there; rankrl.prefix_cache)."})
    eval_seeds: list[int] = field(default_factory=lambda: list(range(10_001, 10_011)),
                                  metadata={"help": "Held-out episode seeds for policy evaluation."})

    def __post_init__(self) -> None:
        problems = []
        if self.num_groups < 1:
            problems.append(f"num_groups must be >= 1 (got {self.num_groups})")
        if not 0 <= self.rank_init <= self.r_max:
            problems.append(f"rank_init must be in [0, r_max={self.r_max}] (got {self.rank_init})")
        if self.rank_init < 1:
            problems.append("rank_init must be >= 1: training starts with live adapters")
        if self.action_levels < 3 or self.action_levels % 2 == 0:
            problems.append(f"action_levels must be odd and >= 3 (got {self.action_levels})")
        for key in ("rank_step", "steps_per_action", "eval_size", "episode_length", "batch_size", "max_length"):
            if getattr(self, key) < 1:
                problems.append(f"{key} must be >= 1 (got {getattr(self, key)})")
        if self.budget_mb is not None and self.budget_mb <= 0:
            problems.append(f"budget_mb must be positive (got {self.budget_mb})")
        if self.budget_frac <= 0:
            problems.append(f"budget_frac must be positive (got {self.budget_frac})")
        if self.budget_range is not None and (len(self.budget_range) != 2
                                              or not 0 < self.budget_range[0] <= self.budget_range[1]):
            problems.append(f"budget_range must be [low, high] with 0 < low <= high (got {self.budget_range})")
        from rankrl.budget import TRACE_KINDS

        unknown = [t for t in self.traces if t not in TRACE_KINDS]
        if unknown or not self.traces:
            problems.append(f"traces must name some of {', '.join(TRACE_KINDS)} (got {self.traces})")
        if self.memory_scope not in ("adapter", "total"):
            problems.append(f"memory_scope must be 'adapter' or 'total' (got {self.memory_scope!r})")
        if not self.tasks:
            problems.append("tasks must name at least one task")
        if problems:
            raise ValueError("; ".join(problems))

    def session_config(self, task: str, seed: int) -> SessionConfig:
        """The fine-tuning run one episode drives."""
        return SessionConfig(
            model=self.model, num_hidden_layers=self.num_hidden_layers, task=task, max_length=self.max_length,
            batch_size=self.batch_size, eval_size=self.eval_size, train_size=self.train_size, lr=self.lr,
            total_steps=self.episode_length * self.steps_per_action, rank=self.rank_init,
            num_groups=self.num_groups, split_by_kind=self.split_by_kind, lora_alpha=self.lora_alpha,
            use_rslora=self.use_rslora, seed=seed, prefix_cache=self.prefix_cache,
        )

    @property
    def num_action_groups(self) -> int:
        """Number of groups the action addresses (2G with ``split_by_kind``)."""
        return self.num_groups * (2 if self.split_by_kind else 1)


def load_env_config(preset: str | Path, **overrides) -> EnvConfig:
    """Load an environment preset by name, path or Gymnasium id (``rankrl/tiny-v3``); keyword overrides are
    checked like file keys."""
    match = re.fullmatch(r"rankrl/(.+)-v(\d+)", str(preset))
    if match:
        if int(match.group(2)) != ENV_VERSION:
            raise PresetError(f"{preset}: this rankrl has environment v{ENV_VERSION}; use {env_id(match.group(1))}.")
        preset = match.group(1)
    path = find_preset("envs", preset)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    data.update(overrides)
    try:
        return from_mapping(EnvConfig, data, str(path))
    except PresetError:
        raise
    except ValueError as err:
        raise PresetError(f"{path}: {err}") from err
