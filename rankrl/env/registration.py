"""Register every shipped environment preset as ``rankrl/<name>-v0`` (done on ``import rankrl``)."""

from __future__ import annotations

import gymnasium as gym

from rankrl.presets import find_preset, list_presets, read_yaml

ENTRY_POINT = "rankrl.env.lora_rank_env:LoRARankEnv"


def env_id(name: str) -> str:
    """Gymnasium id of a preset."""
    return f"rankrl/{name}-v0"


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
