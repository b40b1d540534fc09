"""Behaviour cloning: warm-start an SB3 policy by imitating a rule controller (a teacher) in the environment.

1. :func:`collect_teacher_episodes` runs a :class:`~rankrl.train.teacher.Teacher` for some episodes and keeps
   every (observation, action) pair: an :class:`ImitationDataset` (``.npz`` arrays + ``.json`` description,
   no pickle), tied to its observation layout (:meth:`ImitationDataset.check`).
2. :func:`fit_behaviour_cloning` maximises the log-likelihood of the teacher's actions through the policy's
   own ``evaluate_actions``.
3. Optionally, DAgger rounds (Ross, Gordon and Bagnell, 2011): the clone drives episodes of its own, the
   teacher labels every state the clone reaches (:func:`collect_teacher_episodes` with a ``driver``), and the
   clone is fitted again on everything labelled so far. A clone fitted on the teacher's states alone has never
   seen a state its own mistake leads to (a rule that holds a static allocation never shows a way back after a
   cut too deep), so one wrong decision can stay wrong for the rest of the run; DAgger labels exactly those
   states.
4. :func:`action_agreement` and :func:`compare_returns` measure the clone: how often it takes the teacher's
   action, and its return next to the teacher's on the same held-out episodes (same task, seed, budget and
   trace).

Why not the ``imitation`` library (its ``bc.BC`` does the same maximum likelihood): its newest release
(1.0.1) requires ``stable-baselines3~=2.2.1`` and ``gymnasium~=0.29``, while rankrl runs SB3 2.9 and
Gymnasium 1.x, and it pulls sacred, optuna, datasets and seals besides. The loss is a few lines on SB3's
public ``evaluate_actions``, which is the log-probability PPO itself optimises, so the cloned weights are
exactly the ones PPO continues from.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rankrl import interrupt
from rankrl.env import (
    EnvConfig,
    LoRARankEnv,
    ObservationLayout,
    ObservationMismatchError,
    env_id,
    load_env_config,
)
from rankrl.runs import atomic_write, atomic_write_text, check_writable
from rankrl.train.episodes import held_out_episodes, run_episode
from rankrl.train.teacher import Teacher

DATASET_FORMAT = 2
ARRAYS = ("observations", "actions", "episode_ids", "rewards")


def resolve_env_config(env: str | Path | EnvConfig) -> EnvConfig:
    """An :class:`EnvConfig` from itself or from what :func:`load_env_config` takes (name, path, Gymnasium id)."""
    return env if isinstance(env, EnvConfig) else load_env_config(env)


@dataclass
class ImitationDataset:
    """The teacher's decisions: one row per environment step.

    Attributes:
        observations: ``(N, D)`` float32, the environment's observations.
        actions: ``(N, G + 1)`` int64, the teacher's action index per group, then its plan (``(N, G)`` for a
            dataset without ``plan_names``).
        episode_ids: ``(N,)`` int64, which collected episode each row belongs to (0-based).
        rewards: ``(N,)`` float32, the environment's reward for each action taken (the teacher's, what
            :mod:`rankrl.train.replay` subtracts from the policy's reward on the same episode; the clone's in
            DAgger rows).
        env_id: Gymnasium id of the environment the episodes ran in.
        feature_names: The observation layout (:attr:`ObservationLayout.names`).
        action_names: What each action index does (:attr:`LoRARankEnv.actions`).
        teacher: The teacher's controller spec.
        seed: Seed of the collection.
        episode_seeds: The reset seed of each episode.
        episode_returns: The return of whoever drove each episode.
        episode_budgets: The budget fraction (of the reference) each episode drew.
        episode_traces: The availability trace kind each episode drew.
        driver: Who took the actions: ``"teacher"``, or ``"clone"`` for DAgger rows (the teacher's labels on the
            clone's states; only the teacher's own episodes can be replayed).
        plan_names: What each index of the last action column does (:attr:`LoRARankEnv.plans`).
    """

    observations: np.ndarray
    actions: np.ndarray
    episode_ids: np.ndarray
    rewards: np.ndarray
    env_id: str
    feature_names: list[str]
    action_names: list[str]
    teacher: str
    seed: int = 0
    episode_seeds: list[int] = field(default_factory=list)
    episode_returns: list[float] = field(default_factory=list)
    episode_budgets: list[float] = field(default_factory=list)
    episode_traces: list[str] = field(default_factory=list)
    driver: str = "teacher"
    plan_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.observations = np.asarray(self.observations, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.int64)
        self.episode_ids = np.asarray(self.episode_ids, dtype=np.int64)
        self.rewards = np.asarray(self.rewards, dtype=np.float32)
        rows = len(self.observations)
        if (self.observations.ndim != 2 or self.actions.ndim != 2 or len(self.actions) != rows
                or self.episode_ids.shape != (rows,) or self.rewards.shape != (rows,)):
            raise ValueError(f"An imitation dataset needs observations (N, D), actions (N, G), episode ids (N,) and "
                             f"rewards (N,); got {self.observations.shape}, {self.actions.shape}, "
                             f"{self.episode_ids.shape}, {self.rewards.shape}.")
        if self.observations.shape[1] != len(self.feature_names):
            raise ValueError(f"Observations have {self.observations.shape[1]} features but the dataset names "
                             f"{len(self.feature_names)}.")

    def __len__(self) -> int:
        return len(self.observations)

    @property
    def num_groups(self) -> int:
        """Number of groups G the actions address."""
        return int(self.actions.shape[1]) - (1 if self.plan_names else 0)

    @property
    def layout(self) -> dict:
        """The observation layout in the form policies record it (:meth:`ObservationLayout.to_dict`)."""
        return {"num_groups": self.num_groups, "features": list(self.feature_names)}

    def check(self, layout: ObservationLayout, actions: list[str] | None = None, source: str = "the dataset",
              plans: list[str] | None = None) -> None:
        """Refuse a dataset collected on another observation layout (or action grid, or plans) than ``layout``.

        Raises:
            ObservationMismatchError: another number of groups, other feature names or order, other actions.
        """
        again = "Collect it again on this environment (rankrl train --teacher NAME --bc-data NEW_FILE)."
        layout.check(self.layout, source=f"Imitation dataset {source} ({self.env_id})", made="collected",
                     remedy=again)
        if actions is not None and list(self.action_names) != list(actions):
            raise ObservationMismatchError(
                f"Imitation dataset {source} was collected with actions {self.action_names}, this environment's are "
                f"{list(actions)}. {again}")
        if plans is not None and list(self.plan_names) != list(plans):
            raise ObservationMismatchError(
                f"Imitation dataset {source} was collected with {len(self.plan_names)} plans for the first allocation, "
                f"this environment has {len(plans)}. {again}")

    # ------------------------------------------------------------------ files
    @staticmethod
    def paths(path: str | Path) -> tuple[Path, Path]:
        """``(FILE.npz, FILE.json)`` of a dataset named ``FILE``, ``FILE.npz`` or ``FILE.json``."""
        path = Path(path)
        stem = path.with_suffix("") if path.suffix in (".npz", ".json") else path
        return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")

    @classmethod
    def exists(cls, path: str | Path) -> bool:
        """Whether both files of the dataset are there."""
        return all(p.is_file() for p in cls.paths(path))

    def save(self, path: str | Path) -> Path:
        """Write the arrays (``.npz``) then the description (``.json``), each atomically; returns the ``.npz``."""
        arrays, description = self.paths(path)
        arrays.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path) -> None:
            with tmp.open("wb") as handle:  # a handle: np.savez would append .npz to the temporary name
                np.savez_compressed(handle, **{name: getattr(self, name) for name in ARRAYS})

        atomic_write(arrays, write)
        meta = {key: value for key, value in asdict(self).items() if key not in ARRAYS}
        meta.update(format=DATASET_FORMAT, rows=len(self), num_groups=self.num_groups)
        atomic_write_text(description, json.dumps(meta, indent=2) + "\n")
        return arrays

    @classmethod
    def load(cls, path: str | Path) -> ImitationDataset:
        """Read a dataset written by :meth:`save` (arrays without pickle).

        Raises:
            ValueError: a missing, corrupt or foreign file (named), or one of another format.
        """
        arrays, description = cls.paths(path)
        for file in (arrays, description):
            if not file.is_file():
                raise ValueError(f"Imitation dataset {path}: {file} does not exist.")
        try:
            meta = json.loads(description.read_text())
        except (OSError, ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"Imitation dataset {path} cannot be read ({type(err).__name__}: {err}).") from None
        if not isinstance(meta, dict) or meta.get("format") != DATASET_FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            older = (f" It is format {found}, without the per-step rewards a teacher replay needs; collect it again "
                     "(rankrl train --teacher NAME --bc-data NEW_FILE).") if isinstance(found, int) else ""
            raise ValueError(f"Imitation dataset {description} is not a rankrl imitation dataset of format "
                             f"{DATASET_FORMAT}.{older}")
        try:
            with np.load(arrays, allow_pickle=False) as data:
                values = {name: data[name] for name in ARRAYS}
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"Imitation dataset {path} cannot be read ({type(err).__name__}: {err}).") from None
        keys = ("env_id", "feature_names", "action_names", "teacher", "seed", "episode_seeds", "episode_returns",
                "episode_budgets", "episode_traces")
        try:
            return cls(**values, **{key: meta[key] for key in keys}, driver=str(meta.get("driver", "teacher")),
                       plan_names=list(meta.get("plan_names", [])))
        except KeyError as err:
            raise ValueError(f"Imitation dataset {description} lacks {err}.") from None


# ---------------------------------------------------------------------- collection
def episode_seeds(seed: int, n_episodes: int, avoid: list[int]) -> list[int]:
    """``n_episodes`` reset seeds drawn from ``seed``, none of them in ``avoid`` (the held-out seeds)."""
    rng = np.random.default_rng(seed)
    seeds: list[int] = []
    while len(seeds) < n_episodes:
        candidate = int(rng.integers(2**31 - 1))
        if candidate not in avoid and candidate not in seeds:
            seeds.append(candidate)
    return seeds


def episode_counter(say: Callable[[str], Any], what: str) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` that says ``what: done/total`` about ten times over a collection (episodes
    take seconds to minutes each, and a collection can run for an hour)."""

    def progress(done: int, total: int) -> None:
        if done == total or done % math.ceil(total / 10) == 0:
            say(f"  {what}: {done}/{total}")

    return progress


def collect_teacher_episodes(env: str | Path | EnvConfig, teacher: str | Teacher, n_episodes: int,
                             seed: int = 0, progress=None, driver=None,
                             avoid: list[int] | None = None) -> ImitationDataset:
    """Run ``n_episodes`` full episodes and keep the teacher's action at every state reached.

    Episode ``i`` is reset with the ``i``-th of :func:`episode_seeds` (never one of the preset's
    ``eval_seeds``, which are kept for the held-out comparison, nor one of ``avoid``); task, budget and trace
    follow from it. A stop request (Ctrl-C) is honoured between episodes.

    Args:
        env: Environment preset name, YAML path, Gymnasium id or :class:`EnvConfig`.
        teacher: A controller spec or a :class:`Teacher`.
        n_episodes: Episodes to run (>= 1).
        seed: Seed of the episode seeds.
        progress: Optional ``callable(done, total)`` after each episode.
        driver: ``None``: the teacher acts. Otherwise a ``callable(observation) -> action`` that acts while the
            teacher only labels (a DAgger round; the dataset's ``driver`` is ``"clone"``).
        avoid: More reset seeds not to use (e.g. the episodes already collected).
    """
    if n_episodes < 1:
        raise ValueError(f"The teacher needs at least one episode, got {n_episodes}.")
    config = resolve_env_config(env)
    teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher)
    environment = LoRARankEnv(config=config)
    observations, actions, ids = [], [], []
    episodes = []
    seeds = episode_seeds(seed, n_episodes, [*config.eval_seeds, *(avoid or [])])
    try:
        for episode, episode_seed in enumerate(seeds):
            interrupt.stop_point(lambda: "stopped while collecting the teacher's episodes; nothing was kept.")

            def act(obs: np.ndarray, episode: int = episode) -> np.ndarray:
                action = teacher.action(environment)
                observations.append(obs)
                actions.append(action)
                ids.append(episode)
                return action if driver is None else np.asarray(driver(obs), dtype=np.int64).reshape(action.shape)

            episodes.append(run_episode(environment, act, episode_seed))
            if progress is not None:
                progress(episode + 1, n_episodes)
    finally:
        environment.close()
    rewards = [reward for episode in episodes for reward in episode.rewards]
    return ImitationDataset(np.stack(observations), np.stack(actions), np.asarray(ids), np.asarray(rewards),
                            env_id(config.name), environment.feature_names, list(environment.actions), teacher.spec,
                            seed, seeds, [e.episode_return for e in episodes], [e.budget_frac for e in episodes],
                            [e.trace for e in episodes], "teacher" if driver is None else "clone",
                            list(environment.plans))


def merge_datasets(parts: list[ImitationDataset]) -> ImitationDataset:
    """One dataset of several collected on the same environment by the same teacher (episode ids renumbered);
    what a DAgger round fits on. Its ``driver`` is ``"mixed"`` when the parts' drivers differ.

    Raises:
        ValueError: no parts, or parts of other layouts, actions or teachers.
    """
    if not parts:
        raise ValueError("Nothing to merge.")
    first = parts[0]
    for part in parts[1:]:
        if ((part.feature_names, part.action_names, part.plan_names, part.teacher)
                != (first.feature_names, first.action_names, first.plan_names, first.teacher)):
            raise ValueError(f"Cannot merge imitation datasets of other layouts, actions or teachers ({first.teacher!r}"
                             f" on {first.env_id} and {part.teacher!r} on {part.env_id}).")
    offsets = np.cumsum([0] + [int(p.episode_ids.max(initial=-1)) + 1 for p in parts[:-1]])
    drivers = {p.driver for p in parts}
    return ImitationDataset(
        np.concatenate([p.observations for p in parts]), np.concatenate([p.actions for p in parts]),
        np.concatenate([p.episode_ids + offset for p, offset in zip(parts, offsets, strict=True)]),
        np.concatenate([p.rewards for p in parts]), first.env_id, list(first.feature_names), list(first.action_names),
        first.teacher, first.seed, [s for p in parts for s in p.episode_seeds],
        [r for p in parts for r in p.episode_returns], [b for p in parts for b in p.episode_budgets],
        [t for p in parts for t in p.episode_traces], drivers.pop() if len(drivers) == 1 else "mixed",
        list(first.plan_names))


# ---------------------------------------------------------------------- cloning
@dataclass
class CloningResult:
    """What :func:`fit_behaviour_cloning` did: the mean negative log-likelihood of each epoch."""

    losses: list[float]
    epochs: int
    batch_size: int
    lr: float
    rows: int


def fit_behaviour_cloning(model, dataset: ImitationDataset, epochs: int = 100, batch_size: int = 64,
                          lr: float = 3e-3, seed: int = 0, max_grad_norm: float = 1.0,
                          on_epoch=None) -> CloningResult:
    """Maximise the log-likelihood of the teacher's actions under ``model``'s policy (in place).

    The loss is ``-mean(log pi(a_teacher | obs))`` from the policy's own ``evaluate_actions`` (the
    log-probability PPO's ratio uses), minimised with Adam over shuffled mini-batches; only the actor
    receives gradients. PPO's own optimizer is not touched.

    Args:
        model: An SB3 on-policy algorithm (PPO, A2C) whose action space matches the dataset's.
        dataset: The teacher's decisions (check its layout first: :meth:`ImitationDataset.check`).
        epochs: Passes over the dataset (0 leaves the policy as it is).
        batch_size: Rows per gradient step.
        lr: Adam learning rate.
        seed: Seed of the shuffling.
        max_grad_norm: Gradient-norm clip of each step.
        on_epoch: Optional ``callable(epoch, loss)`` after each epoch (1-based).
    """
    import torch

    if epochs < 0 or batch_size < 1 or not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"Behaviour cloning needs epochs >= 0, batch_size >= 1 and a positive lr; got {epochs}, "
                         f"{batch_size}, {lr}.")
    if len(dataset) == 0:
        raise ValueError("The imitation dataset is empty.")
    policy = model.policy
    nvec = getattr(model.action_space, "nvec", None)
    if (nvec is None or len(nvec) != dataset.actions.shape[1]
            or bool((dataset.actions >= np.asarray(nvec)).any())):
        raise ValueError(f"The dataset's actions ({dataset.num_groups} groups, {len(dataset.action_names)} actions "
                         f"each, {len(dataset.plan_names)} plans) do not fit the policy's action space "
                         f"{model.action_space}.")
    observations = torch.as_tensor(dataset.observations, device=policy.device)
    actions = torch.as_tensor(dataset.actions, device=policy.device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    policy.set_training_mode(True)
    try:
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(dataset), generator=generator)
            total = 0.0
            for start in range(0, len(dataset), batch_size):
                index = order[start:start + batch_size].to(policy.device)
                _, log_prob, _ = policy.evaluate_actions(observations[index], actions[index])
                loss = -log_prob.mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
                optimizer.step()
                total += float(loss.detach()) * len(index)
            losses.append(total / len(dataset))
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
    finally:
        policy.set_training_mode(False)
    return CloningResult(losses, epochs, batch_size, lr, len(dataset))


@dataclass
class Agreement:
    """How often a policy's deterministic action is the teacher's.

    Attributes:
        groups: Fraction of (decision, head) pairs where the action index matches (a head per group, and
            the plan head).
        decisions: Fraction of decisions where every group's action matches.
        rows: Decisions compared.
    """

    groups: float
    decisions: float
    rows: int


def action_agreement(model, dataset: ImitationDataset) -> Agreement:
    """The policy's deterministic actions on the dataset's observations against the teacher's."""
    predicted, _ = model.predict(dataset.observations, deterministic=True)
    predicted = np.asarray(predicted).reshape(dataset.actions.shape)
    same = predicted == dataset.actions
    return Agreement(float(same.mean()), float(same.all(axis=1).mean()), len(dataset))


# ---------------------------------------------------------------------- held-out comparison
@dataclass
class ReturnComparison:
    """Clone against teacher on the same held-out episodes (same task, seed, budget and trace).

    Attributes:
        episodes: ``(seed, task)`` of each held-out episode.
        teacher_returns, clone_returns: Return per episode.
        teacher_accuracy, clone_accuracy: Mean final accuracy.
        agreement: The clone's agreement with the teacher on the states the teacher visited there.
    """

    episodes: list[tuple[int, str]]
    teacher_returns: list[float]
    clone_returns: list[float]
    teacher_accuracy: float
    clone_accuracy: float
    agreement: Agreement

    @property
    def teacher_return(self) -> float:
        return float(np.mean(self.teacher_returns))

    @property
    def clone_return(self) -> float:
        return float(np.mean(self.clone_returns))

    @property
    def difference(self) -> float:
        """Mean paired difference, clone minus teacher."""
        return float(np.mean(np.subtract(self.clone_returns, self.teacher_returns)))

    def summary(self) -> dict:
        """JSON-ready figures (``metadata.json``)."""
        return {"episodes": [list(e) for e in self.episodes], "teacher_return": self.teacher_return,
                "clone_return": self.clone_return, "difference": self.difference,
                "teacher_returns": self.teacher_returns, "clone_returns": self.clone_returns,
                "teacher_accuracy": self.teacher_accuracy, "clone_accuracy": self.clone_accuracy,
                "agreement": asdict(self.agreement)}


def compare_returns(model, teacher: str | Teacher, env: str | Path | EnvConfig, episodes: int | None = None,
                    seeds: list[int] | None = None) -> ReturnComparison:
    """Run the teacher and the clone (deterministic) on the same held-out episodes.

    The episodes are those the training evaluation uses (:func:`rankrl.train.episodes.held_out_episodes`):
    the preset's ``eval_seeds``, task ``i mod len(tasks)``; the seed also fixes the budget and the trace.

    Args:
        model: The cloned SB3 model.
        teacher: The teacher's spec or :class:`Teacher`.
        env: Environment preset name, YAML path, Gymnasium id or :class:`EnvConfig`.
        episodes: How many of the ``eval_seeds`` (default all); ignored when ``seeds`` is given.
        seeds: Explicit held-out seeds.
    """
    config = resolve_env_config(env)
    teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher)
    chosen = list(seeds) if seeds is not None else list(config.eval_seeds[:episodes])
    pairs = held_out_episodes(config, chosen)
    environment = LoRARankEnv(config=config)
    seen, taught = [], []

    def teach(obs: np.ndarray) -> np.ndarray:
        action = teacher.action(environment)
        seen.append(obs)
        taught.append(action)
        return action

    def clone(obs: np.ndarray) -> np.ndarray:
        action, _ = model.predict(obs, deterministic=True)
        return action

    try:
        teacher_runs = [run_episode(environment, teach, seed, task) for seed, task in pairs]
        clone_runs = [run_episode(environment, clone, seed, task) for seed, task in pairs]
    finally:
        environment.close()
    visited = ImitationDataset(np.stack(seen), np.stack(taught), np.zeros(len(seen)), np.zeros(len(seen)),
                               env_id(config.name),
                               environment.feature_names, list(environment.actions), teacher.spec)
    return ReturnComparison(pairs, [e.episode_return for e in teacher_runs], [e.episode_return for e in clone_runs],
                            float(np.mean([e.final_accuracy for e in teacher_runs])),
                            float(np.mean([e.final_accuracy for e in clone_runs])),
                            action_agreement(model, visited))


# ---------------------------------------------------------------------- `rankrl train --teacher`
DEFAULT_BC_EPISODES = 32
DEFAULT_BC_EPOCHS = 100
DEFAULT_DAGGER_EPISODES = 16
BC_BATCH_SIZE = 64
BC_LR = 3e-3
RUN_DATA = "teacher_episodes"
"""Stem of the teacher's episodes in a run directory when no ``--bc-data`` is given (``.npz`` + ``.json``)."""
DAGGER_DATA = "dagger_episodes"
"""Stem of the DAgger rounds' episodes (the clone drives, the teacher labels) in a run directory."""
DAGGER_SEED_OFFSET = 1_000_003
"""DAgger round ``k`` draws its episode seeds from ``seed + DAGGER_SEED_OFFSET + k`` (a stream of its own;
seeds already used by the teacher or an earlier round are skipped)."""


@dataclass
class CloningPlan:
    """Behaviour cloning at the start of a training run, checked before the run directory exists.

    Attributes:
        teacher: The teacher.
        episodes: Teacher episodes to collect.
        epochs: Cloning epochs.
        seed: Seed of the collection and of the shuffling.
        data: Where the dataset is read from (``dataset`` set) or written to; ``None``: into the run.
        dataset: A dataset read from ``data`` and checked against the environment.
        dagger_rounds: DAgger rounds after the first fit (0: none).
        dagger_episodes: Episodes the clone drives in each round.
    """

    teacher: Teacher
    episodes: int
    epochs: int
    seed: int = 0
    data: Path | None = None
    dataset: ImitationDataset | None = None
    dagger_rounds: int = 0
    dagger_episodes: int = DEFAULT_DAGGER_EPISODES

    @classmethod
    def prepare(cls, teacher: str | None, data: str | Path | None, episodes: int | None, epochs: int | None,
                env: LoRARankEnv, seed: int = 0, dagger_rounds: int | None = None,
                dagger_episodes: int | None = None) -> CloningPlan:
        """Every check of the cloning options: the teacher, the dataset's layout, actions and teacher.

        Raises:
            TeacherError: the teacher is not a rule controller.
            ObservationMismatchError: ``data`` was collected on another observation layout or action grid.
            ValueError: bad counts, a dataset of another teacher or driven by a clone, an incomplete or
                unreadable dataset, or ``data`` that does not exist without a teacher to collect it.
        """
        episodes = DEFAULT_BC_EPISODES if episodes is None else episodes
        epochs = DEFAULT_BC_EPOCHS if epochs is None else epochs
        if episodes < 1 or epochs < 1:
            raise ValueError(f"--bc-episodes and --bc-epochs must be >= 1, got {episodes} and {epochs}.")
        rounds = 0 if dagger_rounds is None else dagger_rounds
        per_round = DEFAULT_DAGGER_EPISODES if dagger_episodes is None else dagger_episodes
        if rounds < 0 or per_round < 1:
            raise ValueError(f"--dagger-rounds must be >= 0 and --dagger-episodes >= 1, got {rounds} and {per_round}.")
        chosen = Teacher(teacher) if teacher is not None else None
        dataset = None
        if data is not None:
            data = Path(data)
            files = ImitationDataset.paths(data)
            present = [p for p in files if p.exists()]
            if present and len(present) < len(files):
                raise ValueError(f"--bc-data {data}: only {present[0]} exists; a dataset is both {files[0].name} and "
                                 f"{files[1].name}. Remove it or give another name.")
            if present:
                dataset = ImitationDataset.load(data)
                dataset.check(env.layout, env.actions, source=str(data), plans=env.plans)
                if chosen is not None and dataset.teacher != chosen.spec:
                    raise ValueError(f"--bc-data {data} holds episodes of teacher {dataset.teacher!r}, not "
                                     f"{chosen.spec!r}. Drop --teacher to clone {dataset.teacher!r}, or give another "
                                     "--bc-data file.")
                if dataset.driver != "teacher":
                    raise ValueError(f"--bc-data {data} holds episodes a clone drove (DAgger rows), not the teacher's "
                                     "own; give the teacher's dataset (teacher_episodes in a run directory, or the "
                                     "--bc-data file it was collected into).")
                chosen = chosen or Teacher(dataset.teacher)
            elif chosen is None:
                raise ValueError(f"--bc-data {data}: no such dataset ({files[0].name} + {files[1].name}); give "
                                 "--teacher NAME to collect it there.")
            else:
                check_writable(files[0].parent, "--bc-data")
            data = files[0]
        return cls(chosen, episodes, epochs, seed, data, dataset, rounds, per_round)

    def settings(self) -> dict:
        """What ``config.json`` records."""
        return {"teacher": self.teacher.spec, "bc_episodes": self.episodes, "bc_epochs": self.epochs,
                "bc_data": None if self.data is None else str(self.data.resolve()), "bc_batch_size": BC_BATCH_SIZE,
                "bc_lr": BC_LR, "dagger_rounds": self.dagger_rounds,
                "dagger_episodes": self.dagger_episodes if self.dagger_rounds else None}

    def collect(self, run_dir: Path, env: EnvConfig, say=print) -> ImitationDataset:
        """The teacher's episodes: the dataset read at :meth:`prepare`, or collected now and saved (``data``, else
        ``teacher_episodes`` in the run directory)."""
        if self.dataset is None:
            say(f"behaviour cloning: collecting {self.episodes} episodes of teacher {self.teacher.spec!r}")
            self.dataset = collect_teacher_episodes(env, self.teacher, self.episodes, seed=self.seed,
                                                    progress=episode_counter(say, "teacher episodes"))
            self.data = self.dataset.save(self.data if self.data is not None else Path(run_dir) / RUN_DATA)
        return self.dataset

    def dagger(self, model, run_dir: Path, env: EnvConfig, seed: int, writer, say=print) -> list[dict]:
        """The DAgger rounds after the first fit: the clone (deterministic, as deployed) drives
        ``dagger_episodes`` new episodes, the teacher labels every state, and the clone is fitted again on all
        rows so far. Each round's agreement on the clone's own states (before its refit) says how far off the
        teacher's states the clone strays; it should rise round by round. The rounds' rows are saved as
        ``dagger_episodes`` in the run directory."""
        taught = self.dataset
        rounds, visited = [], []

        def drive(obs: np.ndarray) -> np.ndarray:
            return model.predict(obs, deterministic=True)[0]

        for k in range(1, self.dagger_rounds + 1):
            used = [s for p in [taught, *visited] for s in p.episode_seeds]
            part = collect_teacher_episodes(env, self.teacher, self.dagger_episodes,
                                            seed=seed + DAGGER_SEED_OFFSET + k, driver=drive, avoid=used,
                                            progress=episode_counter(say, f"DAgger round {k}: episodes"))
            on_own = action_agreement(model, part)
            visited.append(part)
            rows = merge_datasets([taught, *visited])
            fitted = fit_behaviour_cloning(model, rows, self.epochs, BC_BATCH_SIZE, BC_LR, seed=seed + k)
            rounds.append({"round": k, "episodes": self.dagger_episodes, "decisions": len(part),
                           "agreement_on_own_states": asdict(on_own),
                           "clone_return": float(np.mean(part.episode_returns)),
                           "loss_last": fitted.losses[-1], "rows": len(rows)})
            writer.add_scalar("bc/dagger_agreement_on_own_states", on_own.groups, k)
            writer.add_scalar("bc/dagger_clone_return", rounds[-1]["clone_return"], k)
            say(f"DAgger round {k}/{self.dagger_rounds}: the clone agreed with {self.teacher.spec!r} on "
                f"{on_own.groups:.2f} of its own {len(part)} decisions; refitted on {rounds[-1]['rows']} rows")
        if visited:
            merge_datasets(visited).save(Path(run_dir) / DAGGER_DATA)
        return rounds

    def run(self, model, run_dir: Path, env: EnvConfig, seed: int, held_out: int, say=print) -> dict:
        """Collect (or take) the teacher's episodes, clone them into ``model`` (then the DAgger rounds) and
        measure the clone.

        Writes ``bc/*`` scalars to ``run_dir/tb/bc`` and returns the figures ``metadata.json`` records.
        """
        from torch.utils.tensorboard import SummaryWriter

        dataset = self.collect(run_dir, env, say)
        source = self.data
        writer = SummaryWriter(str(Path(run_dir) / "tb" / "bc"))
        try:
            before = action_agreement(model, dataset)
            fitted = fit_behaviour_cloning(model, dataset, self.epochs, BC_BATCH_SIZE, BC_LR, seed=seed,
                                           on_epoch=lambda epoch, loss: writer.add_scalar("bc/loss", loss, epoch))
            rounds = self.dagger(model, run_dir, env, seed, writer, say)
            after = action_agreement(model, dataset)
            comparison = compare_returns(model, self.teacher, env, episodes=held_out)
            for tag, value in (("agreement_before", before.groups), ("agreement_after", after.groups),
                               ("held_out_agreement", comparison.agreement.groups),
                               ("teacher_return", comparison.teacher_return),
                               ("clone_return", comparison.clone_return),
                               ("return_difference", comparison.difference)):
                writer.add_scalar(f"bc/{tag}", value, 0)
        finally:
            writer.close()
        say(f"behaviour cloning: agreement with {self.teacher.spec!r} {before.groups:.2f} -> {after.groups:.2f} "
            f"on {len(dataset)} decisions; held-out return {comparison.clone_return:.4f} (clone) vs "
            f"{comparison.teacher_return:.4f} (teacher), agreement {comparison.agreement.groups:.2f}")
        return {"teacher": self.teacher.spec, "data": str(Path(source).resolve()), "env_id": dataset.env_id,
                "episodes": int(len(np.unique(dataset.episode_ids))), "decisions": len(dataset),
                "teacher_return": float(np.mean(dataset.episode_returns)) if dataset.episode_returns else None,
                "epochs": fitted.epochs, "batch_size": fitted.batch_size, "lr": fitted.lr,
                "loss_first": fitted.losses[0], "loss_last": fitted.losses[-1],
                "agreement_before": asdict(before), "agreement_after": asdict(after), "dagger": rounds,
                "held_out": comparison.summary()}
