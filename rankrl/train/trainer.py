"""``rankrl train``: learn a rank-allocation policy with stable-baselines3 on a registered environment."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import gymnasium as gym
from gymnasium.wrappers import TimeLimit

from rankrl.cluster import BACKENDS, connect_ray
from rankrl.env import LoRARankEnv, env_id, load_env_config
from rankrl.env.registration import ENV_VERSION
from rankrl.policy import FEATURES_FILE, METADATA_FILE, POLICY_FILE
from rankrl.presets import to_mapping
from rankrl.runs import new_run_dir, read_config, write_config
from rankrl.train.agent_config import load_agent_config
from rankrl.train.callbacks import BaselineEvalCallback, RankLoggingCallback, check_eval_episodes


def make_limited_env(config, torch_threads: int | None = None) -> gym.Env:
    """A ``LoRARankEnv`` under the episode limit its registration gives (works for preset files too)."""
    return TimeLimit(LoRARankEnv(config=config, torch_threads=torch_threads), max_episode_steps=config.episode_length)


def _vec_env(config, n_envs: int, seed: int, monitor_dir: Path | None, backend: str = "subprocess",
             connection=None):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    if backend == "ray":
        return _ray_vec_env(config, n_envs, seed, monitor_dir, connection)
    if n_envs > 1:
        return make_vec_env(make_limited_env, n_envs=n_envs, seed=seed, monitor_dir=None if monitor_dir is None else str(monitor_dir),
                            env_kwargs={"config": config, "torch_threads": 1}, vec_env_cls=SubprocVecEnv,
                            vec_env_kwargs={"start_method": "forkserver"})
    return make_vec_env(make_limited_env, n_envs=1, seed=seed, monitor_dir=None if monitor_dir is None else str(monitor_dir),
                        env_kwargs={"config": config}, vec_env_cls=DummyVecEnv)


# ---------------------------------------------------------------- --backend ray
def _worker_env(config, action_seed: int) -> gym.Env:
    """One Ray worker's environment, seeded as ``make_vec_env`` seeds worker ``rank`` (``seed + rank``)."""
    env = make_limited_env(config, torch_threads=1)
    env.action_space.seed(action_seed)
    return env


def _ray_vec_env(config, n_envs: int, seed: int, monitor_dir: Path | None, connection=None):
    """Ray actors behind a ``VecEnv``; episodes are recorded by the driver (``monitor/workers.monitor.csv``),
    since on a cluster the workers' files would land on other machines."""
    from functools import partial

    from stable_baselines3.common.vec_env import VecMonitor

    from rankrl.train.ray_vec_env import RayVecEnv

    env_fns = [partial(_worker_env, config, seed + rank) for rank in range(n_envs)]
    vec_env = RayVecEnv(env_fns, connection=connection)
    vec_env.seed(seed)
    filename = None
    if monitor_dir is not None:
        monitor_dir.mkdir(parents=True, exist_ok=True)
        filename = str(monitor_dir / "workers")
    return VecMonitor(vec_env, filename=filename)


def _latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = []
    for path in (run_dir / "checkpoints").glob("*.zip"):
        match = re.search(r"_(\d+)_steps\.zip$", path.name)
        if match:
            checkpoints.append((int(match.group(1)), path))
    return max(checkpoints)[1] if checkpoints else None


def train_policy(env: str = "default", agent: str = "ppo", timesteps: int = 20_000, n_envs: int = 1,
                 seed: int = 0, out: str | Path = "runs", resume: str | Path | None = None,
                 progress: bool = True, device: str = "cpu", init_policy: str | Path | None = None,
                 backend: str = "subprocess", address: str | None = None) -> Path:
    """Train a rank-allocation policy and write a run directory ``<out>/<env>/<agent>_<seed>_<n>/``.

    The run directory holds ``config.json`` (everything resolved), ``policy.zip`` (SB3), ``features.json``
    (the observation layout the policy expects), ``metadata.json`` (groups, rank bounds, deltas, the
    baseline comparison), ``best_policy.zip``, ``checkpoints/``, ``monitor/``, ``tb/`` (TensorBoard) and
    ``learning_curve.png``.

    Args:
        env: Environment preset name or YAML path.
        agent: Agent preset name or YAML path.
        timesteps: Total environment steps (decisions) to train for.
        n_envs: Parallel environments (subprocess workers, one torch thread each, when > 1).
        seed: Seed of the policy and of the environments.
        out: Root of run directories.
        resume: A run directory to continue from its last checkpoint (up to ``timesteps`` in total).
        progress: Show a progress bar.
        device: Torch device of the policy.
        init_policy: Warm start: copy the network weights of this policy (a ``policy.zip`` or run directory
            with the same observation layout, action space and ``net_arch``), e.g. one trained on the cheap
            ``default`` preset before a run on ``minilm``.
        backend: ``subprocess`` (SB3 workers on this machine) or ``ray`` (Ray actors, one CPU each; see
            :mod:`rankrl.train.ray_vec_env`). The same seeds give the same episodes and policy on both.
        address: With ``ray``: ``None`` for a local Ray, ``auto`` or ``HOST:PORT`` / ``ray://HOST:PORT`` of a
            cluster (:func:`rankrl.cluster.connect_ray`).

    Raises:
        ValueError: ``timesteps`` or ``n_envs`` < 1, unknown presets, a resume directory without checkpoints,
            an ``init_policy`` that does not fit (:class:`~rankrl.policy.PolicyFileError`), a bad backend, a
            missing ``ray`` extra, an unreachable ``address`` or too few cluster CPUs
            (:class:`~rankrl.cluster.ClusterError`). Each is raised before the run directory is created.
    """
    if timesteps < 1:
        raise ValueError(f"--timesteps must be a positive number of environment steps, got {timesteps}.")
    if n_envs < 1:
        raise ValueError(f"--n-envs must be >= 1, got {n_envs}.")
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if address is not None and backend != "ray":
        raise ValueError("--address goes with --backend ray.")
    if resume is not None:
        run_dir = Path(resume)
        saved = read_config(run_dir)
        env, agent, seed = saved["env_preset"], saved["agent_preset"], saved["seed"]
        trained_on = str(saved.get("env_id", ""))
        if trained_on and not trained_on.endswith(f"-v{ENV_VERSION}"):
            raise ValueError(f"{run_dir} was trained on {trained_on}; this rankrl trains environment v{ENV_VERSION}, "
                             f"whose actions and observations differ. Start a new run: rankrl train --env {env}.")
        checkpoint = _latest_checkpoint(run_dir)
        if checkpoint is None:
            raise ValueError(f"{run_dir} has no checkpoints to resume from (checkpoints/*_steps.zip).")
    env_config = load_env_config(env)
    agent_config = load_agent_config(agent, env_name=env_config.name)
    check_eval_episodes(env_config, agent_config.eval_episodes)
    spec_env = LoRARankEnv(config=env_config)  # cheap: builds the spaces, layout and deltas only
    warm_start = _load_warm_start(init_policy, spec_env) if init_policy is not None and resume is None else None
    # Ray is connected (and its CPUs checked) before the run directory exists; the VecEnv's close ends it.
    connection = connect_ray(address, n_envs) if backend == "ray" else None
    if resume is None:
        run_dir = new_run_dir(Path(out) / env_config.name, f"{agent_config.name}_{seed}")
        write_config(run_dir, {
            "command": "train", "env_preset": str(env), "agent_preset": str(agent), "env_id": env_id(env_config.name),
            "timesteps": timesteps, "n_envs": n_envs, "seed": seed, "device": device, "backend": backend,
            "address": address,
            "init_policy": None if init_policy is None else str(Path(init_policy).resolve()),
            "env": to_mapping(env_config), "agent": agent_config.to_dict(), "python": platform.python_version(),
        })
    (run_dir / FEATURES_FILE).write_text(json.dumps(spec_env.layout.to_dict(), indent=2) + "\n")

    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback

    vec_env = _vec_env(env_config, n_envs, seed, run_dir / "monitor", backend, connection)
    algorithm = agent_config.algorithm_class()
    if resume is not None:
        model = algorithm.load(checkpoint, env=vec_env, device=device, tensorboard_log=str(run_dir / "tb"))
    else:
        model = algorithm(agent_config.policy, vec_env, seed=seed, device=device, verbose=0,
                          tensorboard_log=str(run_dir / "tb"), policy_kwargs={"net_arch": agent_config.net_arch},
                          **to_mapping(agent_config.hyperparams))
        if warm_start is not None:
            _copy_policy_weights(warm_start, model, init_policy)
    evaluation = BaselineEvalCallback(env_config, run_dir, agent_config.eval_freq, agent_config.eval_episodes)
    callbacks = CallbackList([
        RankLoggingCallback(),
        CheckpointCallback(save_freq=max(agent_config.checkpoint_freq // n_envs, 1),
                           save_path=str(run_dir / "checkpoints"), name_prefix="policy"),
        evaluation,
    ])
    remaining = timesteps - model.num_timesteps
    try:
        if remaining > 0:
            model.learn(remaining, callback=callbacks, progress_bar=progress, tb_log_name=agent_config.name,
                        reset_num_timesteps=resume is None)
    except KeyboardInterrupt:
        path = run_dir / "checkpoints" / f"policy_{model.num_timesteps}_steps.zip"
        model.save(path)
        vec_env.close()
        raise KeyboardInterrupt(
            f"Interrupted at {model.num_timesteps} steps; saved {path}. Continue with: "
            f"rankrl train --resume {run_dir} --timesteps {timesteps}"
        ) from None
    model.save(run_dir / POLICY_FILE)
    vec_env.close()
    _write_metadata(run_dir, env_config, spec_env, agent_config, evaluation, model.num_timesteps)
    from rankrl.train.plots import plot_learning_curve

    plot_learning_curve(run_dir)
    return run_dir


def _load_warm_start(init_policy: str | Path, spec_env: LoRARankEnv):
    """Load ``init_policy`` for a warm start, checked against the new run's layout and action space."""
    from rankrl.policy import PolicyFileError, load_policy

    loaded = load_policy(init_policy, spec_env.layout)
    if loaded.model.action_space != spec_env.action_space:
        raise PolicyFileError(f"--init-policy {init_policy} acts in {loaded.model.action_space}, but this "
                              f"environment's action space is {spec_env.action_space}.")
    from rankrl.controllers.learned import check_env_version

    check_env_version(loaded.metadata, init_policy)
    actions = loaded.metadata.get("actions")
    if actions is not None and list(actions) != spec_env.actions:
        raise PolicyFileError(f"--init-policy {init_policy} was trained with actions {actions}, this "
                              f"environment uses {spec_env.actions}.")
    return loaded.model


def _copy_policy_weights(source, model, init_policy) -> None:
    from rankrl.policy import PolicyFileError

    try:
        model.policy.load_state_dict(source.policy.state_dict())
    except RuntimeError as err:
        raise PolicyFileError(f"--init-policy {init_policy} has another network shape than this agent preset "
                              f"({err.__class__.__name__}); use the agent preset it was trained with.") from err


def _write_metadata(run_dir: Path, env_config, spec_env: LoRARankEnv, agent_config, evaluation, steps: int) -> None:
    deltas = [int(d) for d in spec_env.deltas]
    high = env_config.budget_range[1] if env_config.budget_range else env_config.budget_frac
    metadata = {
        "algo": agent_config.algo, "timesteps": steps, "env": env_config.name, "env_id": env_id(env_config.name),
        "actions": spec_env.actions,
        "num_groups": env_config.num_action_groups, "split_by_kind": env_config.split_by_kind,
        "r_max": env_config.r_max, "rank_init": env_config.rank_init, "rank_step": env_config.rank_step,
        "deltas": deltas, "memory_scope": env_config.memory_scope, "use_rslora": env_config.use_rslora,
        # The highest wall the policy was trained behind, relative to the reference memory; deployment without
        # a budget defaults to it (the policy never saw more memory than that).
        "budget_frac": high if env_config.budget_mb is None else None,
        "budget_range": env_config.budget_range, "traces": env_config.traces,
        "budget_mb": env_config.budget_mb,
        "group_definition": "group g holds transformer layers [g*L/G, (g+1)*L/G); with split_by_kind each depth "
                            "group is split into attention (2g) and MLP (2g+1) modules",
        "rank_pattern_note": "rank per group -> rank_pattern: every LoRA module of group g gets the group's rank "
                             "(RankedLoRA.groups maps module names to groups on any model)",
        "last_evaluation": getattr(evaluation, "last", None),
    }
    (run_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
