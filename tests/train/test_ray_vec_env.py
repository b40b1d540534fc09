"""``RayVecEnv``: the episodes of SB3's own VecEnvs, any spaces, dead workers restarted and retried."""

from __future__ import annotations

import os
import signal
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

ray = pytest.importorskip("ray", reason="the ray extra is part of the test set-up (make setup installs it)")

from rankrl.train.ray_vec_env import RayVecEnv  # noqa: E402

pytestmark = pytest.mark.usefixtures("local_ray")


class DictEnv(gym.Env):
    """A toy env with a Dict observation, a MultiDiscrete action and random episode lengths (np_random)."""

    observation_space = spaces.Dict({"x": spaces.Box(-10, 10, (3,), np.float32), "n": spaces.Discrete(50)})
    action_space = spaces.MultiDiscrete([3, 2])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.limit = 0, int(self.np_random.integers(2, 6))
        self.x = self.np_random.normal(size=3).astype(np.float32)
        return self._obs(), {"limit": self.limit}

    def step(self, action):
        self.t += 1
        self.x = (self.x + self.np_random.normal(size=3) * 0.1 + action[0] - action[1]).astype(np.float32)
        return self._obs(), float(self.x.sum()), self.t >= self.limit, False, {"t": self.t}

    def _obs(self):
        return {"x": np.clip(self.x, -10, 10), "n": self.t}


def _rollout(vec_env, actions, kills=(), close=True):
    """Observations, rewards, dones, terminal observations of ``actions``; ``kills[k](vec_env)`` after
    step k."""
    vec_env.seed(11)
    out = [vec_env.reset()]
    for step, action in enumerate(actions):
        obs, rewards, dones, infos = vec_env.step(action)
        terminal = [info.get("terminal_observation") for info in infos]
        out.append((obs, rewards, dones, terminal))
        if step in dict(kills):
            dict(kills)[step](vec_env)
    if close:
        vec_env.close()
    return out


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            for key in x:
                np.testing.assert_array_equal(x[key], y[key])
        elif isinstance(x, (tuple, list)):
            _assert_same(list(x), list(y))
        elif x is None:
            assert y is None
        else:
            np.testing.assert_array_equal(x, y)


def _actions(env_fn, n_envs=2, steps=40):
    space = env_fn().action_space
    space.seed(5)
    return [np.stack([space.sample() for _ in range(n_envs)]) for _ in range(steps)]


def test_same_episodes_as_dummy_vec_env():
    def env_fn():
        return gym.make("CartPole-v1")

    actions = _actions(env_fn)
    reference = _rollout(make_vec_env(env_fn, n_envs=2, seed=3, vec_env_cls=DummyVecEnv), actions)
    remote = _rollout(make_vec_env(env_fn, n_envs=2, seed=3, vec_env_cls=RayVecEnv), actions)
    _assert_same(reference, remote)
    assert any(d.any() for _, _, d, _ in remote[1:]), "the rollout must cross an auto-reset"


def test_any_spaces_and_the_vec_env_api():
    """Dict observations, MultiDiscrete actions: nothing in the adapter depends on the shapes."""
    actions = _actions(DictEnv)
    reference = _rollout(make_vec_env(DictEnv, n_envs=2, vec_env_cls=DummyVecEnv), actions)
    vec_env = make_vec_env(DictEnv, n_envs=2, vec_env_cls=RayVecEnv)
    try:
        _assert_same(reference, _rollout(vec_env, actions, close=False))
        vec_env.reset()
        assert vec_env.get_attr("limit") == [info["limit"] for info in vec_env.reset_infos]
        vec_env.set_attr("limit", 99, indices=[1])
        assert vec_env.get_attr("limit", indices=1) == [99]
        assert vec_env.env_method("_obs", indices=[0])[0]["n"] == 0
        assert vec_env.has_attr("limit") and not vec_env.has_attr("nothing")
        from stable_baselines3.common.monitor import Monitor

        assert vec_env.env_is_wrapped(Monitor) == [True, True]
    finally:
        vec_env.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vec_env.close()  # closing twice is a no-op


def _kill_actor(vec_env):
    ray.kill(vec_env.actors[1])


def _kill_process(vec_env):
    os.kill(ray.get(vec_env.actors[0].pid.remote()), signal.SIGKILL)


def test_dead_workers_are_restarted_and_their_episodes_retried():
    """An actor killed through Ray and a worker process killed by a signal, mid-episode: same episodes."""
    actions = _actions(DictEnv, steps=20)
    reference = _rollout(make_vec_env(DictEnv, n_envs=2, vec_env_cls=DummyVecEnv), actions)
    vec_env = make_vec_env(DictEnv, n_envs=2, vec_env_cls=RayVecEnv)
    with pytest.warns(UserWarning, match="restarting it and retrying its episode") as caught:
        remote = _rollout(vec_env, actions, kills=[(3, _kill_actor), (8, _kill_process)])
    assert vec_env.restarts == 2
    assert sorted(str(w.message)[:20] for w in caught if "restarting" in str(w.message)) == [
        "Environment worker 0",
        "Environment worker 1",
    ]
    _assert_same(reference, remote)
