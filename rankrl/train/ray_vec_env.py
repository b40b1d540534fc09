"""``RayVecEnv``: an SB3 ``VecEnv`` whose environments live in Ray actors, on this machine or a cluster.

Stable-baselines3 ships no maintained Ray ``VecEnv`` (its issue #1345 is still open) and Ray's RLlib does not
drive SB3 algorithms, so this thin adapter is ours. It mirrors ``SubprocVecEnv`` command for command (same
auto-reset, ``terminal_observation`` and seeding), which is why the same seeds give the same episodes under
both backends. It assumes nothing about the environment beyond the Gymnasium API.

A worker that dies (its actor killed, its process or machine lost) is replaced and its current episode
retried: each worker reports, at every reset, how its episode started (the reset seed and options, or the
state of the environment's ``np_random`` when the reset is unseeded), and the driver keeps the actions taken
since. The new actor re-creates the environment, restores that start, replays the actions and then takes the
step that failed, so a deterministic environment continues exactly where the dead one stopped.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs

from rankrl.cluster import import_ray

MAX_RESTARTS = 3
"""Times in a row a worker may die on the same step before the failure is raised."""


class WorkerLostError(RuntimeError):
    """A Ray worker kept dying on the same step (:data:`MAX_RESTARTS` restarts)."""


class EnvWorker:
    """The body of one Ray actor: an environment and the ``SubprocVecEnv`` worker's commands.

    Written as a plain class (made remote by :class:`RayVecEnv`) so that it can be tested without Ray.
    """

    def __init__(self, env_fn: Callable[[], gym.Env]) -> None:
        from stable_baselines3.common.vec_env.patch_gym import _patch_env

        self.env = _patch_env(env_fn())

    def pid(self) -> int:
        import os

        return os.getpid()

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        return self.env.observation_space, self.env.action_space

    def reset(self, seed: int | None, options: dict | None) -> tuple[Any, dict, dict]:
        """Reset as ``SubprocVecEnv`` does; also return how the episode started (see the module docstring)."""
        start = self._start(seed, options)
        maybe_options = {"options": options} if options else {}
        observation, reset_info = self.env.reset(seed=seed, **maybe_options)
        return observation, reset_info, start

    def step(self, action) -> tuple[Any, Any, bool, dict, dict, dict | None]:
        """Step as ``SubprocVecEnv`` does; the last item is the next episode's start after an auto-reset."""
        observation, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        reset_info, start = {}, None
        if done:
            info["terminal_observation"] = observation
            start = self._start(None, None)
            observation, reset_info = self.env.reset()
        return observation, reward, done, info, reset_info, start

    def replay(self, start: dict, actions: list) -> None:
        """Restart the episode that began at ``start``, take ``actions`` again (a dead worker's episode)."""
        unwrapped = self.env.unwrapped
        if start["seed"] is None and start["rng"] is not None:
            generator = np.random.Generator(getattr(np.random, start["rng"]["bit_generator"])())
            generator.bit_generator.state = start["rng"]
            unwrapped._np_random = generator
        maybe_options = {"options": start["options"]} if start["options"] else {}
        self.env.reset(seed=start["seed"], **maybe_options)
        for action in actions:
            self.env.step(action)

    def _start(self, seed: int | None, options: dict | None) -> dict:
        rng = None
        if seed is None:
            generator = getattr(self.env.unwrapped, "_np_random", None)
            rng = copy.deepcopy(generator.bit_generator.state) if generator is not None else None
        return {"seed": seed, "options": options, "rng": rng}

    def get_attr(self, name: str):
        return self.env.get_wrapper_attr(name)

    def has_attr(self, name: str) -> bool:
        try:
            self.env.get_wrapper_attr(name)
        except AttributeError:
            return False
        return True

    def set_attr(self, name: str, value) -> None:
        setattr(self.env, name, value)

    def env_method(self, name: str, args, kwargs):
        return self.env.get_wrapper_attr(name)(*args, **kwargs)

    def is_wrapped(self, wrapper_class) -> bool:
        from stable_baselines3.common.env_util import is_wrapped

        return is_wrapped(self.env, wrapper_class)

    def render(self):
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class RayVecEnv(VecEnv):
    """``SubprocVecEnv`` with Ray actors as workers (one CPU each); see the module docstring.

    Args:
        env_fns: One environment constructor per worker (pickled to the actors with cloudpickle, as
            ``SubprocVecEnv`` does).
        num_cpus: CPUs each actor reserves.
        max_restarts: Restarts of one worker on one step before :class:`WorkerLostError`.
        connection: A :class:`~rankrl.cluster.RayConnection` that :meth:`close` closes (a Ray it started).

    Attributes:
        actors: The Ray actor handles, one per environment (replaced when a worker dies).
        restarts: Worker restarts so far.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        num_cpus: float = 1,
        max_restarts: int = MAX_RESTARTS,
        connection=None,
    ) -> None:
        ray = import_ray()
        self._ray = ray
        self.env_fns = list(env_fns)
        self.max_restarts = max_restarts
        self.connection = connection
        self.restarts = 0
        # Ray restarts nothing by itself (max_restarts=0): a restarted actor would take the next step on an
        # environment that was never reset. Ray gives actors of one CPU one BLAS thread (OMP_NUM_THREADS).
        self._actor_class = ray.remote(num_cpus=num_cpus, max_restarts=0)(EnvWorker)
        self.actors = [self._new_actor(fn) for fn in self.env_fns]
        self._starts: list[dict | None] = [None] * len(self.env_fns)
        self._actions: list[list] = [[] for _ in self.env_fns]
        self._pending: list = []
        self._pending_actions: np.ndarray | None = None
        self.waiting = False
        self.closed = False
        observation_space, action_space = ray.get(self.actors[0].spaces.remote())
        super().__init__(len(self.env_fns), observation_space, action_space)

    def _new_actor(self, env_fn):
        return self._actor_class.remote(env_fn)

    # ------------------------------------------------------------------ stepping
    def reset(self) -> VecEnvObs:
        refs = [actor.reset.remote(self._seeds[i], self._options[i]) for i, actor in enumerate(self.actors)]
        results = [self._get(i, ref, lambda i=i: self._retry_reset(i)) for i, ref in enumerate(refs)]
        observations, self.reset_infos, starts = zip(*results, strict=True)
        self._starts = list(starts)
        self._actions = [[] for _ in self.actors]
        self._reset_seeds()
        self._reset_options()
        return _stack_obs(observations, self.observation_space)

    def step_async(self, actions: np.ndarray) -> None:
        self._pending_actions = actions
        self._pending = [
            actor.step.remote(action) for actor, action in zip(self.actors, actions, strict=True)
        ]
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        results = []
        for i, ref in enumerate(self._pending):
            results.append(self._get(i, ref, lambda i=i: self._retry_step(i)))
        self.waiting = False
        observations, rewards, dones, infos, reset_infos, starts = zip(*results, strict=True)
        for i, start in enumerate(starts):
            if start is not None:
                self._starts[i], self._actions[i] = start, []
            else:
                self._actions[i].append(self._pending_actions[i])
        self.reset_infos = list(reset_infos)
        return _stack_obs(observations, self.observation_space), np.stack(rewards), np.stack(dones), infos

    # ------------------------------------------------------------------ dead workers
    def _get(self, i: int, ref, retry: Callable[[], Any]):
        """``ray.get`` of worker ``i``'s call; on a dead worker, restart it and ``retry`` (bounded)."""
        for attempt in range(self.max_restarts + 1):
            try:
                return self._ray.get(ref)
            except self._ray.exceptions.RayActorError as err:
                if attempt == self.max_restarts:
                    raise WorkerLostError(
                        f"Environment worker {i} died {attempt + 1} times on the same step "
                        f"({err.__class__.__name__}); giving up."
                    ) from err
                warnings.warn(
                    f"Environment worker {i} died ({err.__class__.__name__}); restarting it and retrying "
                    "its episode.",
                    stacklevel=3,
                )
                self.restarts += 1
                with contextlib.suppress(Exception):  # the actor is gone already
                    self._ray.kill(self.actors[i])
                self.actors[i] = self._new_actor(self.env_fns[i])
                ref = retry()
        raise AssertionError("unreachable")

    def _retry_reset(self, i: int):
        return self.actors[i].reset.remote(self._seeds[i], self._options[i])

    def _retry_step(self, i: int):
        actor = self.actors[i]
        if self._starts[i] is not None:
            actor.replay.remote(self._starts[i], list(self._actions[i]))  # actor calls run in order
        return actor.step.remote(self._pending_actions[i])

    # ------------------------------------------------------------------ VecEnv API
    def close(self) -> None:
        if self.closed:
            return
        for ref in self._pending if self.waiting else ():
            with contextlib.suppress(Exception):  # closing anyway
                self._ray.get(ref)
        for actor in self.actors:
            with contextlib.suppress(Exception):  # a dead worker has nothing left to close
                self._ray.get(actor.close.remote())
            self._ray.kill(actor)
        self.closed = True
        if self.connection is not None:
            self.connection.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but this method assumes it is `rgb_array` to "
                "obtain images.",
                stacklevel=2,
            )
            return [None for _ in self.actors]
        return self._call(lambda actor: actor.render.remote(), None)

    def has_attr(self, attr_name: str) -> bool:
        return all(self._call(lambda actor: actor.has_attr.remote(attr_name), None))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._call(lambda actor: actor.get_attr.remote(attr_name), indices)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._call(lambda actor: actor.set_attr.remote(attr_name, value), indices)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        return self._call(
            lambda actor: actor.env_method.remote(method_name, method_args, method_kwargs), indices
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._call(lambda actor: actor.is_wrapped.remote(wrapper_class), indices)

    def _call(self, submit: Callable, indices: VecEnvIndices) -> list[Any]:
        return self._ray.get([submit(self.actors[i]) for i in self._get_indices(indices)])
