"""The learned controller: a policy from ``rankrl train`` (data: safetensors + JSON), acting deterministically.

The policy is loaded (and its saved observation layout checked against the live run) by :meth:`bind`, which
the deployment calls at set-up through :func:`~rankrl.controllers.prepare_controller`, so a policy built for
another layout or number of groups fails before training starts. Its action is one level per group, an
index into the rank deltas saved in ``metadata.json`` (``deltas``); the decision reports the policy's
probability of every level.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from rankrl.controllers.base import ControllerContext, Decision, RankController
from rankrl.env.observation import ObservationLayout
from rankrl.policy import (
    METADATA_FILE,
    LoadedPolicy,
    PolicyFileError,
    load_policy,
    read_json_file,
    read_policy_spec,
    resolve_policy_path,
    zip_algorithm,
)


class LearnedController(RankController):
    """Drive the ranks with a trained policy (a run directory of ``rankrl train``, or its ``policy.json``).

    Args:
        path: The policy directory or ``policy.json`` (a bare SB3 ``policy.zip`` only with ``trust_policy``).
        device: Torch device of the policy.
        trust_policy: Allow a bare SB3 zip, which is loaded by SB3's unpickling loader.

    Raises:
        PolicyFileError: at construction, when the files are missing or malformed, or the policy is a bare zip
            and ``trust_policy`` is not set; at :meth:`bind`, when the weights cannot be loaded or its action
            space does not fit the run.
        ObservationMismatchError: at :meth:`bind`, for a policy saved for another layout or number of groups.
    """

    name = "learned"

    def __init__(self, path: str | Path, device: str = "cpu", trust_policy: bool = False) -> None:
        self.path = resolve_policy_path(path, trust_policy=trust_policy)
        self.trust_policy = trust_policy
        if self.path.suffix == ".json":  # cheap and safe: the spec only, the weights are read by bind()
            self.metadata: dict = dict(read_policy_spec(self.path).get("metadata") or {})
        else:
            zip_algorithm(self.path)  # a clear error for a file that is no SB3 zip at all
            meta = self.path.parent / METADATA_FILE
            self.metadata = read_json_file(meta, "policy metadata") if meta.exists() else {}
        self.device = device
        self.policy: LoadedPolicy | None = None
        self.deltas: list[int] | None = None

    def bind(self, *, num_groups: int, split_by_kind: bool, r_max: int, rank_step: int,
             total_steps: int | None) -> None:
        self.policy = load_policy(self.path, ObservationLayout(num_groups), device=self.device,
                                  trust_policy=self.trust_policy)
        nvec = np.asarray(getattr(self.policy.action_space, "nvec", []))
        if nvec.shape != (num_groups,) or len(set(nvec.tolist())) != 1:
            raise PolicyFileError(f"The policy {self.path} acts on {nvec.tolist()} levels per group, not on "
                                  f"{num_groups} groups with one set of levels; use a policy from `rankrl train`.")
        levels = int(nvec[0])
        metadata = self.policy.metadata
        if "deltas" in metadata:
            self.deltas = [int(d) for d in metadata["deltas"]]
        else:  # a bare zip: the environment's symmetric deltas in this run's rank steps
            self.deltas = [int(d) * rank_step for d in range(-(levels // 2), levels // 2 + 1)]
        if len(self.deltas) != levels:
            raise PolicyFileError(f"{self.path}: its metadata lists {len(self.deltas)} deltas but the policy has "
                                  f"{levels} action levels; re-export it with `rankrl train`.")
        trained_r_max = metadata.get("r_max")
        if trained_r_max is not None and trained_r_max != r_max:
            warnings.warn(f"The policy {self.path} was trained with r_max={trained_r_max} and this run has "
                          f"r_max={r_max}: its rank_frac observations mean other ranks than in training.",
                          stacklevel=2)

    def probabilities(self, observation: np.ndarray) -> list[list[float]]:
        """The policy's probability of every action level, per group."""
        policy = self._policy()
        obs, _ = policy.obs_to_tensor(observation)
        with torch.no_grad():
            distribution = policy.get_distribution(obs).distribution
        return [d.probs[0].double().tolist() for d in distribution]

    def decide(self, ctx: ControllerContext) -> Decision:
        probabilities = self.probabilities(ctx.observation)
        if len(probabilities) != ctx.num_groups:
            raise ValueError(f"The policy acts on {len(probabilities)} groups but the run has {ctx.num_groups}.")
        action = [int(np.argmax(p)) for p in probabilities]  # SB3's deterministic action: the mode per group
        steps = [self.deltas[a] for a in action]
        targets = [min(max(r + d, 0), ctx.r_max) for r, d in zip(ctx.group_ranks, steps, strict=True)]
        detail = ", ".join(f"g{g} {d:+d} (p={p[a]:.2f})"
                           for g, (d, a, p) in enumerate(zip(steps, action, probabilities, strict=True)))
        return Decision(targets, f"policy: {detail}", probabilities=probabilities, action=action)

    def _policy(self):
        if self.policy is None:
            raise RuntimeError("LearnedController.bind() (or prepare_controller) must run before the first "
                               "decision: it loads the policy and checks it against the run.")
        return self.policy.policy
