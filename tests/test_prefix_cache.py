"""The prefix cache: bottom layers without adapters are computed once per row, and the run does not change."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rankrl.env import env_id
from rankrl.models import load_model
from rankrl.prefix_cache import PrefixCache, base_prefix
from rankrl.session import FineTuneSession, SessionConfig

TASK = "synthetic:keyword?n_train=128&n_eval=48"


def _session(cache: bool, layers: int = 4) -> FineTuneSession:
    return FineTuneSession(SessionConfig(model="tiny", num_hidden_layers=layers, task=TASK, batch_size=8,
                                         eval_size=48, max_length=32, num_groups=layers, rank=4, lr=3e-3,
                                         prefix_cache=cache))


def test_the_depth_is_the_bottom_layers_without_adapters():
    session = _session(cache=True)
    rl = session.rl
    assert base_prefix(rl.ranks, rl.root, training=True) == 0
    for ranks, depth in (([0, 4, 4, 4], 1), ([0, 0, 4, 0], 2), ([0, 0, 0, 4], 3), ([0, 0, 0, 0], 3)):
        session.set_group_ranks(ranks)
        assert base_prefix(rl.ranks, rl.root, training=True) == depth, ranks
    # A frozen group keeps its (learned) update: not the base, not cached.
    session.set_group_ranks([4, 0, 0, 4])
    rl.freeze(0)
    assert base_prefix(rl.ranks, rl.root, training=False) == 0


def test_dropout_rules_out_training_steps_but_not_evaluation():
    model = load_model("tiny", num_hidden_layers=2).model
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1
    for p in model.parameters():
        p.requires_grad_(False)
    ranks = {"bert.encoder.layer.0.attention.self.query": 0, "bert.encoder.layer.1.attention.self.query": 4}
    assert base_prefix(ranks, model, training=True) == 0
    assert base_prefix(ranks, model, training=False) == 1
    assert base_prefix(ranks, torch.nn.Linear(2, 2), training=False) == 0  # not a BERT-style encoder


def test_a_cached_run_matches_an_uncached_one():
    runs = []
    for cache in (False, True):
        session = _session(cache)
        session.set_group_ranks([0, 0, 4, 4])
        losses = session.train(40).losses  # 40 x 8 rows: every training row comes back at least twice
        runs.append((losses, session.evaluate(), session.evaluate(), session))
    (plain, plain_eval, _, _), (cached, cached_eval, again, session) = runs
    assert cached == pytest.approx(plain, abs=1e-5)
    assert cached_eval.accuracy == plain_eval.accuracy and cached_eval.loss == pytest.approx(plain_eval.loss, abs=1e-5)
    assert again == cached_eval  # the second evaluation reads the cache: the same figures
    cache = session.prefix_cache
    # Each split is computed once (2 misses); the first step after the resize measures activations on the
    # whole model, the other 39 steps and the 2 evaluations (one batch each) look up.
    assert cache.misses == 2 and cache.hits == 39 + 2 - cache.misses
    assert len(session.rl.root.bert.encoder.layer) == 4  # the cut is undone


def test_the_same_seed_gives_the_same_run_whatever_the_cache_holds():
    warm = _session(cache=True)
    warm.set_group_ranks([0, 0, 0, 4])
    warm.train(20)
    warm.reset(seed=3)
    fresh = _session(cache=True)
    fresh.reset(seed=3)
    for session in (warm, fresh):
        session.set_group_ranks([0, 0, 0, 4])
    assert warm.train(10).losses == fresh.train(10).losses
    assert warm.evaluate() == fresh.evaluate()


def test_a_failed_forward_restores_the_model_and_a_full_cache_starts_over():
    session = _session(cache=True)
    session.set_group_ranks([0, 0, 4, 4])
    root = session.rl.root
    cache = session.prefix_cache
    batch = session.train_batch(0)
    states = [torch.zeros(int(n), 128) for n in batch["attention_mask"].sum(1)]
    with pytest.raises(RuntimeError, match="inside"), cache.starting_at(root, 2, states, batch["attention_mask"]):
        assert len(root.bert.encoder.layer) == 2
        raise RuntimeError("inside")
    assert len(root.bert.encoder.layer) == 4 and not root.bert.embeddings._forward_hooks
    states[0] = torch.zeros(1, 128)
    with pytest.raises(ValueError, match="cached state 1"), cache.starting_at(root, 2, states, batch["attention_mask"]):
        pass
    small = PrefixCache(max_bytes=1, chunk=5)

    def collate(indices):
        return {k: v[indices] for k, v in batch.items() if k != "labels"}

    first = small.states(root, 2, ("t", "train"), [0, 1], 8, collate)
    assert len(small) == 1 and small.misses == 1 and [s.shape[0] for s in first] == [
        int(n) for n in batch["attention_mask"][:2].sum(1)]
    small.states(root, 1, ("t", "train"), [0], 8, collate)  # over max_bytes: the first entry is dropped
    assert len(small) == 1 and small.misses == 2


def _episode(env, seed: int) -> tuple[list[np.ndarray], list[float], dict[str, int]]:
    """Observations and rewards of an episode that keeps shrinking the ranks, and the variance samples taken."""
    observations, rewards = [env.reset(seed=seed)[0]], []
    action = np.zeros(env.action_space.shape, dtype=np.int64)
    done = False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(action)
        observations.append(observation)
        rewards.append(reward)
        done = terminated or truncated
    return observations, rewards, dict(env.unwrapped.reader.variance.samples)


def test_an_environment_observes_the_same_with_or_without_the_cache_and_whatever_it_holds():
    plain = gym.make(env_id("tiny"), prefix_cache=False)
    cached = gym.make(env_id("tiny"))
    assert cached.unwrapped.config.prefix_cache
    (obs_a, rewards_a, samples_a), (obs_b, rewards_b, samples_b) = _episode(plain, 7), _episode(cached, 7)
    assert cached.unwrapped.session.prefix_cache.hits > 0
    # The same samples of the same inputs: a skipped layer is never due, the fill is not observed.
    assert samples_b == samples_a
    assert all(np.allclose(a, b, atol=1e-4) for a, b in zip(obs_a, obs_b, strict=True))
    assert rewards_b == pytest.approx(rewards_a, abs=1e-4)
    # A warm cache (its episode after another one) and an empty one (a fresh worker) give the same episode.
    again = _episode(cached, 11)
    fresh = _episode(gym.make(env_id("tiny")), 11)
    assert all(np.array_equal(a, b) for a, b in zip(again[0], fresh[0], strict=True))
    assert again[1:] == fresh[1:]
