"""The learned controller: a stable-baselines3 policy from ``rankrl train``, acting deterministically.

The policy is loaded (and its saved observation layout checked against the live run) by :meth:`bind`, which
the deployment calls at set-up through :func:`~rankrl.controllers.prepare_controller`, so a policy built for
another layout or number of groups fails before training starts. Its action is one index per group into the
actions saved in ``metadata.json`` (``actions``: the rank deltas, then ``freeze`` and ``thaw``, as in
environment v1); the decision reports the policy's probability of every action. A policy trained on
environment v0 (rank deltas only) is refused with the command that retrains it.
"""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from rankrl.controllers.base import ControllerContext, Decision, RankController
from rankrl.env.lora_rank_env import FREEZE, THAW
from rankrl.env.observation import ObservationLayout
from rankrl.env.registration import ENV_VERSION
from rankrl.policy import LoadedPolicy, PolicyFileError, load_policy, resolve_policy_path


class LearnedController(RankController):
    """Drive the ranks with a trained policy (``policy.zip`` from ``rankrl train``, or its run directory).

    Args:
        path: The ``policy.zip`` or the run directory holding it (with ``features.json``, ``metadata.json``).
        device: Torch device of the policy.

    Raises:
        PolicyFileError: at construction, when the file is missing or is not a zip; at :meth:`bind`, when
            stable-baselines3 cannot load it or its action space does not fit the run.
        ObservationMismatchError: at :meth:`bind`, for a policy saved for another layout or number of groups.
    """

    name = "learned"

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        self.path = resolve_policy_path(path)
        if not zipfile.is_zipfile(self.path):
            raise PolicyFileError(f"{self.path} is not a stable-baselines3 zip (corrupt or another format). "
                                  "Re-export it with `rankrl train`.")
        self.device = device
        self.policy: LoadedPolicy | None = None
        self.actions: list[str] | None = None

    def bind(self, *, num_groups: int, split_by_kind: bool, r_max: int, rank_step: int,
             total_steps: int | None) -> None:
        self.policy = load_policy(self.path, ObservationLayout(num_groups), device=self.device)
        nvec = np.asarray(getattr(self.policy.model.action_space, "nvec", []))
        if nvec.shape != (num_groups,) or len(set(nvec.tolist())) != 1:
            raise PolicyFileError(f"The policy {self.path} acts on {nvec.tolist()} levels per group, not on "
                                  f"{num_groups} groups with one set of levels; use a policy from `rankrl train`.")
        levels = int(nvec[0])
        metadata = self.policy.metadata
        check_env_version(metadata, self.path)
        if "actions" in metadata:
            self.actions = [str(a) for a in metadata["actions"]]
        else:  # a bare zip: the environment's actions in this run's rank steps
            from rankrl.env.lora_rank_env import action_names

            self.actions = action_names(levels - 2, rank_step)
        if len(self.actions) != levels:
            raise PolicyFileError(f"{self.path}: metadata.json lists {len(self.actions)} actions but the policy has "
                                  f"{levels} per group; re-export it with `rankrl train`.")
        trained_r_max = metadata.get("r_max")
        if trained_r_max is not None and trained_r_max != r_max:
            warnings.warn(f"The policy {self.path} was trained with r_max={trained_r_max} and this run has "
                          f"r_max={r_max}: its rank_frac observations mean other ranks than in training.",
                          stacklevel=2)

    def probabilities(self, observation: np.ndarray) -> list[list[float]]:
        """The policy's probability of every action level, per group."""
        model = self._model()
        obs, _ = model.policy.obs_to_tensor(observation)
        with torch.no_grad():
            distribution = model.policy.get_distribution(obs).distribution
        return [d.probs[0].double().tolist() for d in distribution]

    def decide(self, ctx: ControllerContext) -> Decision:
        probabilities = self.probabilities(ctx.observation)
        if len(probabilities) != ctx.num_groups:
            raise ValueError(f"The policy acts on {len(probabilities)} groups but the run has {ctx.num_groups}.")
        action = [int(np.argmax(p)) for p in probabilities]  # SB3's deterministic action: the mode per group
        names = [self.actions[a] for a in action]
        frozen = list(ctx.frozen) if ctx.frozen else [False] * ctx.num_groups
        targets = []
        for g, (rank, name) in enumerate(zip(ctx.group_ranks, names, strict=True)):
            if name in (FREEZE, THAW):
                targets.append(rank)
                frozen[g] = name == FREEZE
            else:
                targets.append(min(max(rank + int(name), 0), ctx.r_max))
        detail = ", ".join(f"g{g} {n} (p={p[a]:.2f})"
                           for g, (n, a, p) in enumerate(zip(names, action, probabilities, strict=True)))
        return Decision(targets, f"policy: {detail}", probabilities=probabilities, action=action, frozen=frozen)

    def _model(self):
        if self.policy is None:
            raise RuntimeError("LearnedController.bind() (or prepare_controller) must run before the first "
                               "decision: it loads the policy and checks it against the run.")
        return self.policy.model


def check_env_version(metadata: dict, path: Path | str) -> None:
    """Refuse a policy trained on another environment version (it acts and observes differently)."""
    env_id = str(metadata.get("env_id") or "")
    version = env_id.rpartition("-v")[2]
    trained = int(version) if version.isdigit() else (0 if "deltas" in metadata and "actions" not in metadata else None)
    if trained is not None and trained != ENV_VERSION:
        preset = env_id.partition("/")[2].rpartition("-v")[0] or "default"
        raise PolicyFileError(
            f"The policy {path} was trained on environment v{trained} ({env_id or 'rank deltas only'}), and this "
            f"rankrl runs v{ENV_VERSION} (freeze and thaw, moving budgets): its actions and observations mean "
            f"other things. Retrain it: rankrl train --env {preset}."
        )
