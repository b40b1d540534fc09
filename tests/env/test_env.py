"""LoRARankEnv: Gymnasium and SB3 API checks, determinism, the memory wall, divergence, registration."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import rankrl  # noqa: F401  (registers the presets)
from rankrl.env import LoRARankEnv, load_env_config
from rankrl.env.plans import plan_names
from rankrl.presets import PresetError, list_presets


@pytest.fixture(scope="module")
def env():
    environment = gym.make("rankrl/tiny-v3")
    yield environment
    environment.close()


def test_gymnasium_env_checker_passes():
    from gymnasium.utils.env_checker import check_env

    environment = LoRARankEnv(preset="tiny")
    check_env(environment, skip_render_check=True)
    environment.close()


def test_sb3_env_checker_passes():
    from stable_baselines3.common.env_checker import check_env

    environment = LoRARankEnv(preset="tiny")
    check_env(environment, warn=True)
    environment.close()


def test_same_seed_same_actions_same_trajectory():
    def rollout(seed: int) -> tuple[list[np.ndarray], list[float]]:
        environment = LoRARankEnv(preset="tiny")
        obs, _ = environment.reset(seed=seed)
        observations, rewards = [obs], []
        for action in ([2, 0, 0], [3, 2, 0], [0, 4, 0]):
            obs, reward, *_ = environment.step(np.array(action))
            observations.append(obs)
            rewards.append(reward)
        environment.close()
        return observations, rewards

    (obs_a, rew_a), (obs_b, rew_b) = rollout(3), rollout(3)
    assert all(np.array_equal(a, b) for a, b in zip(obs_a, obs_b, strict=True)) and rew_a == rew_b
    obs_c, _ = rollout(4)
    assert not all(np.array_equal(a, b) for a, b in zip(obs_a, obs_c, strict=True))


def test_episode_truncates_at_preset_length_and_reward_parts_add_up(env):
    _, info = env.reset(seed=0)
    config = env.unwrapped.config
    steps, total, parts = 0, 0.0, 0.0
    first_accuracy = info["accuracy"]
    while True:
        obs, reward, terminated, truncated, info = env.step(np.asarray([1] * config.num_groups + [0]))
        assert env.observation_space.contains(obs)
        steps, total = steps + 1, total + reward
        parts += info["reward/accuracy"] + info["reward/memory"] + info["reward/time"] + info["reward/wall"]
        if terminated or truncated:
            break
    assert truncated and not terminated and steps == config.episode_length
    assert total == pytest.approx(parts)
    accuracy_gain = info["accuracy"] - first_accuracy
    costs = total - config.reward.accuracy * accuracy_gain
    assert costs < 0  # the memory and depth costs are paid at every step


def test_growth_is_clipped_at_the_memory_wall():
    environment = LoRARankEnv(preset="tiny", budget_frac=1.0)
    environment.reset(seed=0)
    _, _, _, _, info = environment.step(np.array([2, 2, 0]))  # +step everywhere from the budget-defining ranks
    assert info["wall_hit"] and info["clipped_groups"]
    assert info["reward/wall"] < 0
    assert info["memory_used_bytes"] <= info["budget_bytes"]
    assert all(a <= r for a, r in zip(info["ranks"], info["requested_ranks"], strict=True))
    _, _, _, _, info = environment.step(np.array([0, 0, 0]))  # shrinking is always allowed
    assert not info["wall_hit"] and info["ranks"] == [2, 2]
    environment.close()


def test_memory_is_read_on_the_reference_batch_so_it_moves_with_the_ranks_only():
    environment = LoRARankEnv(preset="tiny", budget_frac=1.0)
    environment.reset(seed=0, options={"task": environment.config.tasks[0]})
    fractions = [environment.step(np.array(action))[4]["memory_used_frac"]
                 for action in ([1, 1, 0], [1, 1, 0], [0, 0, 0], [2, 2, 0], [1, 1, 0])]
    # Training batches differ in padded length; the readings do not, and the start ranks read 1.0 exactly.
    assert fractions[0] == fractions[1] == fractions[3] == fractions[4] == 1.0
    assert fractions[2] < 1.0
    # A later episode on the same task reads the same figures from the shared cache.
    environment.reset(seed=5, options={"task": environment.config.tasks[0]})
    assert environment.step(np.array([0, 0, 0]))[4]["memory_used_frac"] == fractions[2]
    environment.close()


def test_freeze_keeps_the_rank_frees_memory_and_thaw_restores_training():
    environment = LoRARankEnv(preset="tiny", budget_frac=1.0)
    environment.reset(seed=0)
    environment.step(np.array([1, 1, 0]))
    used = environment.reader.budget.last.used
    _, _, _, _, info = environment.step(np.array([3, 1, 0]))  # freeze the bottom group
    assert info["frozen"] == [True, False] and info["ranks"] == [4, 4]
    assert info["memory_used_bytes"] < used and info["backward_depth"] == 0.5
    obs, _, _, _, info = environment.step(np.array([4, 1, 0]))  # thaw it
    assert info["frozen"] == [False, False] and info["backward_depth"] == 1.0
    names = environment.feature_names
    assert obs[names.index("group0/frozen")] == 0.0
    environment.close()


@pytest.mark.parametrize("trace", ["constant", "step-down", "step-up", "spike", "sawtooth"])
def test_the_wall_holds_at_every_optimizer_step_under_every_trace(trace):
    environment = LoRARankEnv(preset="tiny", budget_range=[0.5, 0.6], traces=[trace])
    _, info = environment.reset(seed=1)
    assert info["trace"]["name"] == trace and 0.5 <= info["budget_frac"] <= 0.6
    meter = environment.reader.budget
    seen = []
    original = environment.session.train

    def train(steps, measure_every=0):  # every optimizer step: memory in force <= the budget in force
        for _ in range(steps):
            budget = environment._budget_at(environment.session.step)
            seen.append((meter.read(environment.session.optimizer).used, budget))
            result = original(1, measure_every)
        return result

    environment.session.train = train
    environment.action_space.seed(7)
    for _ in range(environment.config.episode_length):
        environment.step(environment.action_space.sample())
    assert len(seen) == environment.total_steps
    assert all(used <= budget for used, budget in seen)
    environment.close()


@pytest.mark.parametrize("trace", ["constant", "step-down", "step-up"])
def test_the_observation_holds_the_lowest_budget_of_the_trace(trace):
    """What ``static-fit`` fits: the trace's minimum, known from the start (a step-down halves the budget)."""
    environment = LoRARankEnv(preset="tiny", budget_range=[0.8, 0.8], traces=[trace])
    obs, info = environment.reset(seed=1)
    names = environment.feature_names
    floor = obs[names.index("budget/floor_frac")]
    reference = environment.budget.reference
    assert floor == pytest.approx(environment.budget.floor / reference, abs=1e-6)
    assert floor == pytest.approx(min(frac for _, frac in info["trace"]["points"]), abs=1e-3)
    assert floor == pytest.approx(info["budget_frac"], abs=1e-3) == pytest.approx(0.8, abs=1e-3)
    assert (obs[names.index("budget/ref_frac")] > floor + 0.01) == (trace == "step-down")  # starts higher
    environment.close()


def test_a_budget_below_the_starting_memory_is_met_by_the_first_action():
    environment = LoRARankEnv(preset="tiny", budget_frac=0.6)
    obs, info = environment.reset(seed=0)
    assert obs[environment.feature_names.index("memory/used_frac")] > 1.0  # the start does not fit
    _, _, _, _, info = environment.step(np.array([1, 1, 0]))  # hold: the wall drops groups before step one
    assert info["forced_groups"] and info["memory_used_bytes"] <= info["budget_bytes"]
    assert 0 in info["ranks"] and not any(info["frozen"])  # nothing learned yet: dropped, not frozen
    environment.close()


def test_rank_bounds_and_zero():
    environment = LoRARankEnv(preset="tiny", budget_frac=3.0)
    environment.reset(seed=0)
    for _ in range(3):
        _, _, _, _, info = environment.step(np.array([0, 2, 0]))
    assert info["ranks"] == [0, 8]  # clipped into [0, r_max]
    assert environment.session.rl.lora_layer(environment.session.rl.group_modules(0)[0]) is None
    environment.close()


def test_divergence_terminates_with_the_penalty():
    environment = LoRARankEnv(preset="tiny")
    environment.reset(seed=0)
    head = environment.session.rl.model.base_model.model.classifier.modules_to_save["default"]
    with torch.no_grad():
        head.weight.fill_(float("nan"))
    _, reward, terminated, truncated, info = environment.step(np.array([1, 1, 0]))
    assert terminated and not truncated and info["diverged"]
    assert reward == -environment.config.reward.divergence
    environment.close()


def test_feature_names_match_the_observation(env):
    obs, _ = env.reset(seed=1)
    names = env.unwrapped.feature_names
    assert len(names) == obs.shape[0] == 10 + 9 * env.unwrapped.config.num_groups
    assert len(set(names)) == len(names) and "group1/importance_share" in names


def test_invalid_action_is_refused(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="not in MultiDiscrete"):
        env.unwrapped.step(np.array([7, 0, 0]))


def test_budget_below_the_smallest_trainable_configuration_is_refused():
    environment = LoRARankEnv(preset="tiny", budget_frac=0.01)
    with pytest.raises(ValueError, match="Raise budget_mb, budget_frac or budget_range"):
        environment.reset(seed=0)


@pytest.mark.parametrize("old", ["rankrl/tiny-v0", "rankrl/tiny-v1", "rankrl/tiny-v2"])
def test_old_ids_name_the_current_version(old):
    with pytest.raises(gym.error.DeprecatedEnv, match="rankrl/tiny-v3"):
        gym.make(old)


def test_vectorised_with_sb3_make_vec_env():
    from stable_baselines3.common.env_util import make_vec_env

    vec = make_vec_env("rankrl/tiny-v3", n_envs=2, seed=0)
    obs = vec.reset()
    assert obs.shape == (2, vec.observation_space.shape[0])
    obs, rewards, dones, infos = vec.step(np.array([[1, 1, 0], [3, 0, 0]]))
    assert rewards.shape == (2,) and len(infos) == 2
    vec.close()


# ---------------------------------------------------------------- presets
@pytest.mark.parametrize("name", list_presets("envs"))
def test_every_shipped_preset_loads_and_is_registered(name):
    config = load_env_config(name)
    assert config.name == name
    spec = gym.spec(f"rankrl/{name}-v3")
    assert spec.max_episode_steps == config.episode_length
    environment = LoRARankEnv(preset=name)  # cheap: builds the spaces only
    assert environment.observation_space.shape == (10 + 9 * config.num_action_groups,)
    plans = plan_names(config.num_action_groups, config.r_max, config.rank_step)
    levels = [config.action_levels + 2] * config.num_action_groups
    assert environment.action_space.nvec.tolist() == levels + [len(plans)]
    assert environment.plans == plans
    assert environment.session is None


def test_unknown_key_and_wrong_type_name_the_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: tiny\nrank_step: 2\nrnak_init: 4\n")
    with pytest.raises(PresetError, match=r"bad.yaml: unknown key rnak_init"):
        load_env_config(bad)
    bad.write_text("model: tiny\nreward:\n  memory: lots\n")
    with pytest.raises(PresetError, match=r"bad.yaml: key reward.memory must be a float"):
        load_env_config(bad)
    bad.write_text("model: tiny\nrank_init: 40\nr_max: 8\n")
    with pytest.raises(PresetError, match=r"bad.yaml: rank_init must be in"):
        load_env_config(bad)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(PresetError, match="Known presets: .*tiny"):
        load_env_config("nope")


def test_a_drop_inside_the_k_steps_of_a_decision_is_met_before_the_next_optimizer_step():
    from rankrl.budget import BudgetTrace

    environment = LoRARankEnv(preset="tiny", steps_per_action=4)
    environment.reset(seed=0)
    environment.trace = BudgetTrace(((0, 1.0), (6, 0.6)), "frac", "drop at 6")  # inside the second decision
    environment.reader.budget.budget = environment._budget_at(0)
    infos = [environment.step(np.array([1, 1, 0]))[4] for _ in range(3)]  # hold: only the wall moves anything
    assert not infos[0]["forced_groups"] and infos[1]["forced_groups"] == [0] and not infos[2]["forced_groups"]
    assert infos[1]["frozen"] == [True, False] and infos[1]["ranks"] == [4, 4]  # frozen, its update kept
    assert infos[1]["memory_used_bytes"] <= infos[1]["budget_bytes"] and infos[1]["reward/wall"] < 0
    environment.close()


# ---------------------------------------------------------------- v3: the plan head, costs of the reference
def test_a_plan_sets_the_whole_first_allocation_and_is_ignored_later():
    environment = LoRARankEnv(preset="tiny", budget_frac=1.0, traces=["constant"])
    environment.reset(seed=0)
    plan = environment.plans.index("top1@2")
    grow_everywhere = [2] * environment.layout.num_groups  # +step, which the plan overrides
    _, _, _, _, info = environment.step(np.asarray([*grow_everywhere, plan]))
    assert info["plan"] == "top1@2" and info["ranks"] == [0, 2] and info["requested_ranks"] == [0, 2]
    _, _, _, _, info = environment.step(np.asarray([1, 1, environment.plans.index("top2@8")]))  # held: no plan
    assert info["plan"] == "none" and info["ranks"] == [0, 2]
    environment.reset(seed=0)
    _, _, _, _, info = environment.step(environment.hold)  # plan 0 leaves the first decision to the groups
    assert info["plan"] == "none" and info["ranks"] == [environment.config.rank_init] * 2
    environment.close()


def test_the_cost_features_of_v3_do_not_move_with_the_budget():
    def costs(fraction: float) -> dict[str, float]:
        environment = LoRARankEnv(preset="tiny", traces=["constant"])
        environment.reset(seed=0, options={"budget_frac": fraction})
        environment.close()
        return {name: environment.last_features[name] for name in environment.last_features
                if "_cost_" in name or "_free_" in name}

    low, high = costs(0.6), costs(1.0)
    assert "group0/grow_cost_ref" in LoRARankEnv(preset="tiny").feature_names
    for g in range(2):
        for name in (f"group{g}/grow_cost_ref", f"group{g}/freeze_free_ref"):
            assert low[name] > 0 and low[name] == high[name]
        for name in (f"group{g}/grow_cost_frac", f"group{g}/freeze_free_frac"):  # v2's: of the budget in force
            assert low[name] == pytest.approx(high[name] / 0.6, rel=0.02)
