"""Register every shipped environment preset as ``rankrl/<name>-v3`` (done on ``import rankrl``).

Version history (Gymnasium's rule: changed semantics, new version): v0 acted on rank deltas only, under a
fixed wall at the start memory; v1 adds freeze and thaw to the actions, budgets that move during an
episode, the first decision before the first step, and a reward with the wall as a hard constraint; v2
observes the fraction of the starting error closed instead of the accuracy (the same on any number of
classes), and its presets train on multi-class tasks too; v3 adds a head that chooses the first allocation
whole (:mod:`rankrl.env.plans`) and measures the per-group costs against the reference memory instead of
the budget in force. Only the current version is registered; Gymnasium names it when an older one is
asked for. v1 and v2 policies still deploy (the learned controller builds their observation and reads
their per-group actions).
"""

from __future__ import annotations

import gymnasium as gym

from rankrl.presets import find_preset, list_presets, read_yaml

ENTRY_POINT = "rankrl.env.lora_rank_env:LoRARankEnv"


ENV_VERSION = 3


def env_id(name: str) -> str:
    """Gymnasium id of a preset."""
    return f"rankrl/{name}-v{ENV_VERSION}"


def register_presets() -> list[str]:
    """Register the shipped presets (idempotent); returns their ids.

    Only ``episode_length`` is read here, for ``max_episode_steps``; the preset is validated when the
    environment is made, so a broken preset file cannot break ``import rankrl``.
    """
    ids = []
    for name in list_presets("envs"):
        spec_id = env_id(name)
        ids.append(spec_id)
        if spec_id in gym.registry:
            continue
        try:
            steps = int(read_yaml(find_preset("envs", name)).get("episode_length", 8))
        except (ValueError, TypeError):
            steps = None
        gym.register(id=spec_id, entry_point=ENTRY_POINT, max_episode_steps=steps, kwargs={"preset": name})
    return ids
