"""``rankrl train``: learn a rank-allocation policy with stable-baselines3 on a registered environment."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import shutil
import zipfile
from pathlib import Path

import gymnasium as gym
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.callbacks import BaseCallback

from rankrl import interrupt
from rankrl.cluster import BACKENDS, connect_ray
from rankrl.env import LoRARankEnv, env_id, load_env_config
from rankrl.env.registration import ENV_VERSION
from rankrl.policy import FEATURES_FILE, METADATA_FILE, POLICY_FILE, save_policy_data
from rankrl.presets import to_mapping
from rankrl.runs import atomic_write_text, check_writable, new_run_dir, read_config, write_config
from rankrl.train.agent_config import load_agent_config
from rankrl.train.anchor import DEFAULT_ANCHOR, DEFAULT_HALF_LIFE, TeacherAnchor
from rankrl.train.callbacks import BaselineEvalCallback, RankLoggingCallback
from rankrl.train.episodes import check_eval_episodes
from rankrl.train.imitation import CloningPlan
from rankrl.train.replay import CurriculumCallback, ReplayPlan, TeacherReplay

DEFAULT_TIMESTEPS = 20_000
DEFAULT_EVAL_POINTS = 8
CURRICULUM_START = 0.25


def make_limited_env(config, torch_threads: int | None = None, replay: ReplayPlan | None = None) -> gym.Env:
    """A ``LoRARankEnv`` under the episode limit its registration gives (works for preset files too), replaying
    the teacher's episodes when a ``replay`` plan is given (:mod:`rankrl.train.replay`).

    In a worker subprocess (``torch_threads`` set) Ctrl-C is left to the parent, which stops cleanly and
    closes the workers; otherwise a terminal's Ctrl-C would kill them mid-step.
    """
    if torch_threads is not None:
        interrupt.ignore_in_worker()
    env = TimeLimit(LoRARankEnv(config=config, torch_threads=torch_threads), max_episode_steps=config.episode_length)
    return env if replay is None else TeacherReplay(env, replay)


def _vec_env(config, n_envs: int, seed: int, monitor_dir: Path | None, backend: str = "subprocess",
             connection=None, replay: ReplayPlan | None = None):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    if backend == "ray":
        return _ray_vec_env(config, n_envs, seed, monitor_dir, connection, replay)
    monitor = None if monitor_dir is None else str(monitor_dir)
    if n_envs > 1:
        return make_vec_env(make_limited_env, n_envs=n_envs, seed=seed, monitor_dir=monitor,
                            env_kwargs={"config": config, "torch_threads": 1, "replay": replay},
                            vec_env_cls=SubprocVecEnv, vec_env_kwargs={"start_method": "forkserver"})
    return make_vec_env(make_limited_env, n_envs=1, seed=seed, monitor_dir=monitor,
                        env_kwargs={"config": config, "replay": replay}, vec_env_cls=DummyVecEnv)


# ---------------------------------------------------------------- --backend ray
def _worker_env(config, action_seed: int, replay: ReplayPlan | None = None) -> gym.Env:
    """One Ray worker's environment, seeded as ``make_vec_env`` seeds worker ``rank`` (``seed + rank``)."""
    env = make_limited_env(config, torch_threads=1, replay=replay)
    env.action_space.seed(action_seed)
    return env


def _ray_vec_env(config, n_envs: int, seed: int, monitor_dir: Path | None, connection=None,
                 replay: ReplayPlan | None = None):
    """Ray actors behind a ``VecEnv``; episodes are recorded by the driver (``monitor/workers.monitor.csv``),
    since on a cluster the workers' files would land on other machines."""
    from functools import partial

    from stable_baselines3.common.vec_env import VecMonitor

    from rankrl.train.ray_vec_env import RayVecEnv

    env_fns = [partial(_worker_env, config, seed + rank, replay) for rank in range(n_envs)]
    vec_env = RayVecEnv(env_fns, connection=connection)
    vec_env.seed(seed)
    filename = None
    if monitor_dir is not None:
        monitor_dir.mkdir(parents=True, exist_ok=True)
        filename = str(monitor_dir / "workers")
    return VecMonitor(vec_env, filename=filename)


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(timesteps, path)`` of the run's checkpoints, newest first (partial files are not listed)."""
    checkpoints = []
    for path in (run_dir / "checkpoints").glob("*.zip"):
        match = re.search(r"_(\d+)_steps\.zip$", path.name)
        if match:
            checkpoints.append((int(match.group(1)), path))
    return sorted(checkpoints, reverse=True)


def save_zip(model, path: Path) -> Path:
    """``model.save`` to a temporary name, then rename: a kill mid-save never leaves a truncated zip."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.partial.zip")
    model.save(tmp)
    os.replace(tmp, path)
    return path


class CheckpointEvery(BaseCallback):
    """Save ``checkpoints/policy_<timesteps>_steps.zip`` atomically every ``every`` environment steps, and stop
    training at the next step after Ctrl-C / SIGTERM (:mod:`rankrl.interrupt`)."""

    def __init__(self, run_dir: Path, every: int) -> None:
        super().__init__()
        self.directory = Path(run_dir) / "checkpoints"
        self.every = every
        self.last: int | None = None
        self.stopped = False

    def _init_callback(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.last = self.model.num_timesteps  # a resumed run starts past 0 (the callback's own count starts at 0)

    def _on_step(self) -> bool:
        if self.num_timesteps // self.every > self.last // self.every:
            self.save()
        if interrupt.requested() is not None:
            self.stopped = True
            return False
        return True

    def save(self) -> Path:
        self.last = self.num_timesteps
        return save_zip(self.model, self.directory / f"policy_{self.num_timesteps}_steps.zip")


def _resume_model(algorithm, run_dir: Path, vec_env, build, say) -> object:
    """A fresh model with the newest checkpoint's weights and optimizer, read without unpickling.

    SB3's ``set_parameters`` reads only the ``.pth`` entries (``torch.load(weights_only=True)``); the step
    count comes from the zip's JSON ``data``. A damaged checkpoint (a kill during an older, non-atomic save)
    is reported and the previous one is used.
    """
    for timesteps, path in _checkpoints(run_dir):
        try:
            with zipfile.ZipFile(path) as archive:
                data = json.loads(archive.read("data"))
            model = build()
            model.set_parameters(str(path), exact_match=True, device=model.device)
        except Exception as err:  # any damage: fall back to the previous checkpoint
            say(f"checkpoint {path.name} is unusable ({type(err).__name__}: {err}); trying the previous one")
            continue
        model.num_timesteps = int(data.get("num_timesteps", timesteps))
        model._n_updates = int(data.get("_n_updates", 0))
        return model
    raise ValueError(f"{run_dir} has no usable checkpoints to resume from (checkpoints/*_steps.zip); start a new "
                     "run instead.")


def train_policy(env: str = "default", agent: str = "ppo", timesteps: int | None = None, n_envs: int = 1,
                 seed: int = 0, out: str | Path = "runs", resume: str | Path | None = None,
                 progress: bool = True, device: str = "cpu", init_policy: str | Path | None = None,
                 checkpoint_every: int | None = None, trust_policy: bool = False, say=print,
                 backend: str = "subprocess", address: str | None = None, teacher: str | None = None,
                 bc_episodes: int | None = None, bc_epochs: int | None = None,
                 bc_data: str | Path | None = None, replay: bool = True, relative_reward: bool = True,
                 curriculum: float | None = None, eval_episodes: int | None = None,
                 eval_points: int = DEFAULT_EVAL_POINTS, anchor: float | None = None,
                 anchor_half_life: float | None = None, dagger_rounds: int | None = None,
                 dagger_episodes: int | None = None) -> Path:
    """Train a rank-allocation policy and write a run directory ``<out>/<env>/<agent>_<seed>_<n>/``.

    The run directory holds ``config.json`` (everything resolved), ``policy.json`` + ``policy.safetensors``
    (the policy as data, what ``learned:`` loads), ``policy.zip`` (the SB3 model), ``features.json`` (the
    observation layout), ``metadata.json`` (groups, rank bounds, deltas, the baseline comparison),
    ``best_policy.{json,safetensors,zip}``, ``checkpoints/``, ``monitor/``, ``tb/`` (TensorBoard) and
    ``learning_curve.png``.

    With a ``teacher`` the policy first clones a rule controller (:mod:`rankrl.train.imitation`): the
    teacher's episodes (``bc_data``, or ``teacher_episodes.{npz,json}`` in the run directory), the agreement
    with its actions before and after cloning, and the clone's return next to the teacher's on the held-out
    episodes go to ``metadata.json`` (``behaviour_cloning``) and TensorBoard (``bc/*``); then PPO continues
    from the cloned weights (``timesteps=0``: clone only). By default PPO then replays the teacher's episodes,
    easiest first, rewarded against the teacher on the same episode (:mod:`rankrl.train.replay`), and keeps a
    pull towards the teacher's decisions whose weight halves over training (:mod:`rankrl.train.anchor`).

    The policy is evaluated on the preset's held-out episodes before the first update, at least
    ``eval_points`` times during training and at the end, paired with the fixed rank, ``static-fit`` and the
    teacher on the same episodes (``evaluations.jsonl``, TensorBoard ``eval/*``, ``learning_curve.png``).

    Args:
        env: Environment preset name or YAML path.
        agent: Agent preset name or YAML path.
        timesteps: Total environment steps (decisions) to train for; default 20,000, or a resumed run's own
            target; 0 (with a teacher) clones only.
        n_envs: Parallel environments (subprocess workers, one torch thread each, when > 1).
        seed: Seed of the policy and of the environments.
        out: Root of run directories.
        resume: A run directory to continue from its newest good checkpoint: its config, monitor history,
            evaluations and best score are kept.
        progress: Show a progress bar.
        device: Torch device of the policy.
        init_policy: Warm start: copy the network weights of this policy (a run directory or ``policy.json``
            with the same observation layout, action space and ``net_arch``; a bare zip needs
            ``trust_policy``), e.g. one trained on the cheap ``default`` preset before a run on ``minilm``.
        checkpoint_every: Environment steps between checkpoints (default: the agent preset's).
        trust_policy: Allow a bare SB3 zip as ``init_policy`` (it is unpickled).
        say: Where resume messages go.
        backend: ``subprocess`` (SB3 workers on this machine) or ``ray`` (Ray actors, one CPU each; see
            :mod:`rankrl.train.ray_vec_env`). The same seeds give the same episodes and policy on both.
        address: With ``ray``: ``None`` for a local Ray, ``auto`` or ``HOST:PORT`` / ``ray://HOST:PORT`` of a
            cluster (:func:`rankrl.cluster.connect_ray`).
        teacher: A rule controller to clone before PPO starts (:data:`rankrl.train.teacher.TEACHERS`).
        bc_episodes: Teacher episodes to collect (default 32).
        bc_epochs: Passes of behaviour cloning over them (default 100).
        bc_data: An imitation dataset (``FILE.npz`` + ``FILE.json``): read when it exists (its teacher is
            used when ``teacher`` is not given), else collected and written there.
        replay: With a teacher, PPO's episodes are the teacher's episodes (:class:`~rankrl.train.replay.TeacherReplay`).
        relative_reward: With ``replay``, reward the policy by its reward minus the teacher's at the same decision.
        curriculum: With ``replay``, the fraction of ``timesteps`` over which the draw widens from the easiest
            quarter of the teacher's episodes to all of them (default 0.5; 0: all from the start).
        eval_episodes: Held-out episodes per evaluation (default: the agent preset's ``eval_episodes``).
        eval_points: Evaluations during training at least (besides the one before the first update).
        anchor: With a teacher, the weight of the pull towards its decisions at step 0 (default 0.2; 0: off).
        anchor_half_life: The fraction of ``timesteps`` over which the anchor's weight halves (default 0.5).
        dagger_rounds: With a teacher, DAgger rounds after the first fit (default 0): the clone drives episodes,
            the teacher labels the states it reaches, and the clone is fitted again on every row so far.
        dagger_episodes: Episodes the clone drives per DAgger round (default 16).

    Raises:
        ValueError: ``timesteps`` or ``n_envs`` < 1, unknown presets, a resume directory that is not a train
            run or has no usable checkpoint, an ``init_policy`` that does not fit
            (:class:`~rankrl.policy.PolicyFileError`), a bad backend, a missing ``ray`` extra, an unreachable
            ``address`` or too few cluster CPUs (:class:`~rankrl.cluster.ClusterError`), a teacher that is not a
            rule controller (:class:`~rankrl.train.teacher.TeacherError`), an imitation dataset of another
            observation layout (:class:`~rankrl.env.ObservationMismatchError`) or teacher.
        Interrupted: Ctrl-C / SIGTERM, after saving a checkpoint (the message says how to continue).
    """
    cloning = teacher is not None or bc_data is not None
    if not cloning and (bc_episodes is not None or bc_epochs is not None):
        raise ValueError("--bc-episodes and --bc-epochs go with --teacher (or --bc-data).")
    if not cloning and (dagger_rounds is not None or dagger_episodes is not None):
        raise ValueError("--dagger-rounds and --dagger-episodes go with --teacher (or --bc-data).")
    if timesteps is not None and timesteps < (0 if cloning else 1):
        raise ValueError(f"--timesteps must be a positive number of environment steps (0 with --teacher: clone only), "
                         f"got {timesteps}.")
    if cloning and resume is not None:
        raise ValueError("--teacher clones a teacher at the start of a new run; a resumed run continues its own "
                         "policy. Drop --teacher/--bc-data, or start a new run.")
    if curriculum is not None and not (cloning and replay):
        raise ValueError("--curriculum orders the teacher's episodes that PPO replays: it goes with --teacher (or "
                         "--bc-data) and --replay.")
    if curriculum is not None and not 0.0 <= curriculum <= 1.0:
        raise ValueError(f"--curriculum is a fraction of the training steps in [0, 1], got {curriculum}.")
    if (anchor is not None or anchor_half_life is not None) and not cloning:
        raise ValueError("--anchor pulls PPO towards the teacher's decisions: it goes with --teacher (or --bc-data).")
    if anchor is not None and not (anchor >= 0 and math.isfinite(anchor)):
        raise ValueError(f"--anchor is a weight >= 0, got {anchor}.")
    if anchor_half_life is not None and not anchor_half_life > 0:
        raise ValueError(f"--anchor-half-life is a positive fraction of the training steps, got {anchor_half_life}.")
    if eval_points < 1 or (eval_episodes is not None and eval_episodes < 1):
        raise ValueError(f"--eval-points and --eval-episodes must be >= 1, got {eval_points} and {eval_episodes}.")
    if n_envs < 1:
        raise ValueError(f"--n-envs must be >= 1, got {n_envs}.")
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if address is not None and backend != "ray":
        raise ValueError("--address goes with --backend ray.")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be a positive number of environment steps, got {checkpoint_every}.")
    saved: dict = {}
    if resume is not None:
        run_dir = Path(resume)
        saved = read_config(run_dir)
        if saved.get("command", "train") != "train" or "env_preset" not in saved:
            raise ValueError(f"--resume: {run_dir} is a rankrl {saved.get('command', '?')} run, not a `rankrl train` "
                             "run; resume it with its own command.")
        env, agent, seed = saved["env_preset"], saved["agent_preset"], saved["seed"]
        trained_on = str(saved.get("env_id", ""))
        if trained_on and not trained_on.endswith(f"-v{ENV_VERSION}"):
            raise ValueError(f"{run_dir} was trained on {trained_on}; this rankrl trains environment v{ENV_VERSION}, "
                             f"whose actions and observations differ. Start a new run: rankrl train --env {env}.")
        timesteps = timesteps if timesteps is not None else int(saved["timesteps"])
        checkpoint_every = checkpoint_every or saved.get("checkpoint_every")
        if not _checkpoints(run_dir):
            raise ValueError(f"{run_dir} has no checkpoints to resume from (checkpoints/*_steps.zip).")
        check_writable(run_dir, "--resume")
    else:
        check_writable(out, "--out")
    timesteps = timesteps if timesteps is not None else DEFAULT_TIMESTEPS
    env_config = load_env_config(env)
    agent_config = load_agent_config(agent, env_name=env_config.name)
    if resume is not None:
        eval_episodes, eval_points = saved.get("eval_episodes", eval_episodes), saved.get("eval_points", eval_points)
    eval_episodes = eval_episodes or agent_config.eval_episodes
    check_eval_episodes(env_config, eval_episodes)
    if resume is not None:
        saved.update(eval_episodes=eval_episodes, eval_points=eval_points)
    spec_env = LoRARankEnv(config=env_config)  # cheap: builds the spaces, layout and deltas only
    cloning_plan = (CloningPlan.prepare(teacher, bc_data, bc_episodes, bc_epochs, spec_env, seed, dagger_rounds,
                                        dagger_episodes) if cloning else None)
    warm_start = (_load_warm_start(init_policy, spec_env, trust_policy)
                  if init_policy is not None and resume is None else None)
    every = checkpoint_every or agent_config.checkpoint_freq
    # Ray is connected (and its CPUs checked) before the run directory exists; the VecEnv's close ends it.
    connection = connect_ray(address, n_envs) if backend == "ray" else None
    if resume is None:
        run_dir = new_run_dir(Path(out) / env_config.name, f"{agent_config.name}_{seed}")
        saved = {
            "command": "train", "env_preset": str(env), "agent_preset": str(agent), "env_id": env_id(env_config.name),
            "timesteps": timesteps, "n_envs": n_envs, "seed": seed, "device": device, "checkpoint_every": every,
            "backend": backend, "address": address,
            "init_policy": None if init_policy is None else str(Path(init_policy).resolve()),
            **(cloning_plan.settings() if cloning_plan is not None else {"teacher": None}),
            "replay": ({"relative_reward": relative_reward, "curriculum": 0.5 if curriculum is None else curriculum,
                        "curriculum_start": CURRICULUM_START} if cloning_plan is not None and replay else None),
            "anchor": ({"weight": DEFAULT_ANCHOR if anchor is None else anchor,
                        "half_life": (DEFAULT_HALF_LIFE if anchor_half_life is None else anchor_half_life)
                        * max(timesteps, 1)} if cloning_plan is not None else None),
            "eval_episodes": eval_episodes, "eval_points": eval_points,
            "env": to_mapping(env_config), "agent": agent_config.to_dict(), "python": platform.python_version(),
        }
    try:
        return _train(run_dir, saved, env_config, agent_config, spec_env, warm_start, init_policy, timesteps,
                      n_envs, seed, every, resume is not None, progress, device, say, backend, connection,
                      cloning_plan)
    except _SetupError as err:  # nothing trained yet: a new run leaves no directory behind
        if resume is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise err.__cause__ from None


class _SetupError(Exception):
    """A failure before the first training step (its cause is re-raised)."""


def _train(run_dir: Path, saved: dict, env_config, agent_config, spec_env, warm_start, init_policy, timesteps: int,
           n_envs: int, seed: int, every: int, resuming: bool, progress: bool, device: str, say,
           backend: str = "subprocess", connection=None, cloning: CloningPlan | None = None) -> Path:
    from stable_baselines3.common.callbacks import CallbackList

    layout = spec_env.layout.to_dict()
    settings, anchoring = saved.get("replay"), saved.get("anchor")
    plan = dataset = None
    try:
        if resuming:
            keep_history(run_dir)
        if cloning is not None:  # first: PPO's workers replay these episodes, and the anchor pulls towards them
            dataset = cloning.collect(run_dir, env_config, say)
            for part in (settings, anchoring):
                if part is not None:
                    part["data"] = str(Path(cloning.data).resolve())
        elif settings is not None or anchoring is not None:  # a resumed run: the same episodes again
            from rankrl.train.imitation import ImitationDataset

            source = (settings or anchoring)["data"]
            dataset = ImitationDataset.load(source)
            dataset.check(spec_env.layout, spec_env.actions, source=source)
        if settings is not None and timesteps > 0:
            plan = ReplayPlan.from_dataset(dataset, relative=settings["relative_reward"])
        vec_env = _vec_env(env_config, n_envs, seed, run_dir / "monitor", backend, connection, plan)
        algorithm = agent_config.algorithm_class()

        def build():
            return algorithm(agent_config.policy, vec_env, seed=seed, device=device, verbose=0,
                             tensorboard_log=str(run_dir / "tb"), policy_kwargs={"net_arch": agent_config.net_arch},
                             **to_mapping(agent_config.hyperparams))

        if resuming:
            model = _resume_model(algorithm, run_dir, vec_env, build, say)
            truncate_evaluations(run_dir, model.num_timesteps)
            saved.setdefault("resumed", []).append({"from_timesteps": int(model.num_timesteps), "target": timesteps})
            saved["timesteps"] = timesteps
        else:
            model = build()
            if warm_start is not None:
                _copy_policy_weights(warm_start, model, init_policy)
        write_config(run_dir, saved)
        atomic_write_text(run_dir / FEATURES_FILE, json.dumps(layout, indent=2) + "\n")
    except (Exception, KeyboardInterrupt, interrupt.Interrupted) as err:  # nothing kept: a new run is removed
        raise _SetupError() from err
    cloned = None
    if cloning is not None:
        try:
            cloned = cloning.run(model, run_dir, env_config, seed, saved["eval_episodes"], say)
        except (Exception, KeyboardInterrupt, interrupt.Interrupted) as err:  # nothing kept: the run is removed
            _close(vec_env)
            raise _SetupError() from err
    static = _metadata(env_config, spec_env, agent_config)

    def save_best(model) -> None:
        save_zip(model, run_dir / "best_policy.zip")
        save_policy_data(model, run_dir, static, layout=layout, stem="best_policy")

    # At least eval_points evaluations on the way (the preset's eval_freq when that gives more), paired with the
    # rules the policy has to beat: static-fit, and the teacher it was cloned from.
    eval_freq = min(agent_config.eval_freq, max(1, math.ceil(timesteps / saved["eval_points"])))
    references = list(dict.fromkeys(["static-fit", *([saved["teacher"]] if saved.get("teacher") else [])]))
    evaluation = BaselineEvalCallback(env_config, run_dir, eval_freq, saved["eval_episodes"], on_best=save_best,
                                      references=references)
    checkpoints = CheckpointEvery(run_dir, every)
    steps = [RankLoggingCallback(), checkpoints, evaluation]
    if plan is not None:
        steps.append(CurriculumCallback(timesteps, start=settings["curriculum_start"], ramp=settings["curriculum"]))
    if anchoring is not None and anchoring["weight"] > 0 and dataset is not None:
        steps.append(TeacherAnchor(dataset, anchoring["weight"], anchoring["half_life"], seed=seed))
    callbacks = CallbackList(steps)
    start = model.num_timesteps
    remaining = timesteps - start
    try:
        if remaining > 0:
            model.learn(remaining, callback=callbacks, progress_bar=progress, tb_log_name=agent_config.name,
                        reset_num_timesteps=not resuming)
    except KeyboardInterrupt:  # library use without rankrl's signal handlers
        checkpoints.stopped = True
    except Exception as err:
        if model.num_timesteps == start:  # the environments failed before the first step (e.g. a bad model)
            _close(vec_env)
            raise _SetupError() from err
        raise
    if checkpoints.stopped:
        path = checkpoints.save()
        _close(vec_env)
        raise interrupt.Interrupted(
            f"train interrupted at {model.num_timesteps} of {timesteps} steps; kept {path} (and the monitor, "
            f"evaluations and TensorBoard logs). Continue with: rankrl train --resume {run_dir}"
        ) from None
    save_zip(model, run_dir / POLICY_FILE)
    _close(vec_env)
    metadata = {**static, "timesteps": int(model.num_timesteps), "last_evaluation": getattr(evaluation, "last", None)}
    if cloned is not None:
        metadata["behaviour_cloning"] = cloned
    atomic_write_text(run_dir / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")
    save_policy_data(model, run_dir, metadata, layout=layout)
    from rankrl.train.evaluation_table import write_evaluation_table
    from rankrl.train.plots import plot_learning_curve

    plot_learning_curve(run_dir)
    write_evaluation_table(run_dir)
    return run_dir


def keep_history(run_dir: Path) -> None:
    """Before a resumed leg: move the monitor files of the earlier leg to ``<i>.leg<k>.monitor.csv``, so the new
    leg's monitors (SB3 rewrites ``<i>.monitor.csv``) add to the history instead of replacing it."""
    monitor = run_dir / "monitor"
    current = sorted(monitor.glob("[0-9]*.monitor.csv")) if monitor.is_dir() else []
    current = [p for p in current if re.fullmatch(r"\d+\.monitor\.csv", p.name)]
    if not current:
        return
    leg = 1 + max((int(m.group(1)) for p in monitor.glob("*.leg*.monitor.csv")
                   if (m := re.search(r"\.leg(\d+)\.monitor\.csv$", p.name))), default=0)
    for path in current:
        path.rename(path.with_name(path.name.replace(".monitor.csv", f".leg{leg}.monitor.csv")))


def truncate_evaluations(run_dir: Path, timesteps: int) -> None:
    """Drop evaluations after the checkpoint a resume starts from (they are redone) and any half-written line."""
    path = run_dir / "evaluations.jsonl"
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("timesteps", 0) <= timesteps:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _close(vec_env) -> None:
    with contextlib.suppress(EOFError, BrokenPipeError, ConnectionResetError):  # workers gone (terminal Ctrl-C)
        vec_env.close()


def _load_warm_start(init_policy: str | Path, spec_env: LoRARankEnv, trust_policy: bool = False):
    """Load ``init_policy`` for a warm start, checked against the new run's layout and action space."""
    from rankrl.controllers.learned import check_env_version
    from rankrl.policy import PolicyFileError, load_policy

    loaded = load_policy(init_policy, None, trust_policy=trust_policy)
    check_env_version(loaded.metadata, init_policy, exact=True)  # before the layout: the likelier cause
    if loaded.features:
        spec_env.layout.check(loaded.features, source=f"--init-policy {init_policy}")
    if loaded.observation_space != spec_env.observation_space or loaded.action_space != spec_env.action_space:
        raise PolicyFileError(f"--init-policy {init_policy} observes {loaded.observation_space} and acts in "
                              f"{loaded.action_space}, but this environment has {spec_env.observation_space} and "
                              f"{spec_env.action_space}.")
    actions = loaded.metadata.get("actions")
    if actions is not None and list(actions) != spec_env.actions:
        raise PolicyFileError(f"--init-policy {init_policy} was trained with actions {actions}, this "
                              f"environment uses {spec_env.actions}.")
    plans = loaded.metadata.get("plans")
    if plans is not None and list(plans) != spec_env.plans:
        raise PolicyFileError(f"--init-policy {init_policy} was trained with {len(plans)} plans for the first "
                              f"allocation, this environment has {len(spec_env.plans)}.")
    return loaded.policy


def _copy_policy_weights(source, model, init_policy) -> None:
    from rankrl.policy import PolicyFileError

    try:
        model.policy.load_state_dict(source.state_dict())
    except RuntimeError as err:
        raise PolicyFileError(f"--init-policy {init_policy} has another network shape than this agent preset "
                              f"({err.__class__.__name__}); use the agent preset it was trained with.") from err


def _metadata(env_config, spec_env: LoRARankEnv, agent_config) -> dict:
    """What a policy records about the environment it was trained in (``metadata.json``, ``policy.json``)."""
    high = env_config.budget_range[1] if env_config.budget_range else env_config.budget_frac
    return {
        "algo": agent_config.algo, "env": env_config.name, "env_id": env_id(env_config.name),
        "actions": spec_env.actions, "plans": spec_env.plans,
        "num_groups": env_config.num_action_groups, "split_by_kind": env_config.split_by_kind,
        "r_max": env_config.r_max, "rank_init": env_config.rank_init, "rank_step": env_config.rank_step,
        "deltas": [int(d) for d in spec_env.deltas], "memory_scope": env_config.memory_scope,
        "use_rslora": env_config.use_rslora,
        # The highest wall the policy was trained behind, relative to the reference memory; deployment without
        # a budget defaults to it (the policy never saw more memory than that).
        "budget_frac": high if env_config.budget_mb is None else None,
        "budget_range": env_config.budget_range, "traces": env_config.traces,
        "budget_mb": env_config.budget_mb,
        "group_definition": "group g holds transformer layers [g*L/G, (g+1)*L/G); with split_by_kind each depth "
                            "group is split into attention (2g) and MLP (2g+1) modules",
        "rank_pattern_note": "rank per group -> rank_pattern: every LoRA module of group g gets the group's rank "
                             "(RankedLoRA.groups maps module names to groups on any model)",
    }
