"""The learned controller: a policy from ``rankrl train`` (data: safetensors + JSON), acting deterministically.

The policy is loaded (and its saved observation layout checked against the live run) by :meth:`bind`, which
the deployment calls at set-up through :func:`~rankrl.controllers.prepare_controller`, so a policy built for
another layout or number of groups fails before training starts. Its action is one index per group into the
actions saved in ``metadata.json`` (``actions``: the rank deltas, then ``freeze`` and ``thaw``, as in
environment v1 to v3), then, from v3, one index into its ``plans`` (a whole first allocation,
:mod:`rankrl.env.plans`), which counts at the run's first decision only. The decision reports the policy's
probability of every action. The observation is built in the layout of the environment version the policy
was trained on (v1: the accuracy, v2: the gain over the run's start, v3: costs of the reference), so
policies of v1 and v2 still deploy. A policy trained on environment v0 (rank deltas only) is refused with
the command that retrains it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from rankrl.controllers.base import ControllerContext, Decision, RankController
from rankrl.env.lora_rank_env import FREEZE, THAW
from rankrl.env.observation import OBSERVATION_VERSIONS, ObservationLayout
from rankrl.env.plans import NO_PLAN, plan_names, plan_ranks
from rankrl.env.registration import ENV_VERSION
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
        self.actions: list[str] | None = None
        self.plans: list[str] = []
        self.layout: ObservationLayout | None = None

    def bind(self, *, num_groups: int, split_by_kind: bool, r_max: int, rank_step: int,
             total_steps: int | None) -> None:
        version = check_env_version(self.metadata, self.path)
        self.layout = ObservationLayout(num_groups, version)
        self.policy = load_policy(self.path, self.layout, device=self.device, trust_policy=self.trust_policy)
        nvec = np.asarray(getattr(self.policy.action_space, "nvec", []))
        planned = version >= 3
        groups = nvec[:-1] if planned else nvec
        if groups.shape != (num_groups,) or len(set(groups.tolist())) != 1:
            raise PolicyFileError(f"The policy {self.path} acts on {nvec.tolist()} levels, not on {num_groups} groups "
                                  f"with one set of levels{' and a plan' if planned else ''}; use a policy from "
                                  "`rankrl train`.")
        levels = int(groups[0])
        metadata = self.policy.metadata
        if planned:
            trained = int(metadata.get("r_max") or r_max), int(metadata.get("rank_step") or rank_step)
            self.plans = [str(p) for p in metadata.get("plans") or plan_names(num_groups, *trained)]
            if len(self.plans) != int(nvec[-1]):
                raise PolicyFileError(f"{self.path}: its metadata lists {len(self.plans)} plans but the policy has "
                                      f"{int(nvec[-1])}; re-export it with `rankrl train`.")
            try:
                for plan in self.plans:
                    plan_ranks(plan, num_groups)
            except ValueError as err:
                raise PolicyFileError(f"{self.path}: {err} Re-export it with `rankrl train`.") from None
        if "actions" in metadata:
            self.actions = [str(a) for a in metadata["actions"]]
        else:  # a bare zip: the environment's actions in this run's rank steps
            from rankrl.env.lora_rank_env import action_names

            self.actions = action_names(levels - 2, rank_step)
        if len(self.actions) != levels:
            raise PolicyFileError(f"{self.path}: its metadata lists {len(self.actions)} actions but the policy has "
                                  f"{levels} per group; re-export it with `rankrl train`.")
        trained_r_max = metadata.get("r_max")
        if trained_r_max is not None and trained_r_max != r_max:
            warnings.warn(f"The policy {self.path} was trained with r_max={trained_r_max} and this run has "
                          f"r_max={r_max}: its rank_frac observations mean other ranks than in training.",
                          stacklevel=2)

    def probabilities(self, observation: np.ndarray) -> list[list[float]]:
        """The policy's probability of every action level, per group (then of every plan, from v3)."""
        policy = self._policy()
        obs, _ = policy.obs_to_tensor(observation)
        with torch.no_grad():
            distribution = policy.get_distribution(obs).distribution
        return [d.probs[0].double().tolist() for d in distribution]

    def decide(self, ctx: ControllerContext) -> Decision:
        layout = self.layout or ObservationLayout(ctx.num_groups)
        probabilities = self.probabilities(layout.vector(ctx.features))
        heads = ctx.num_groups + (1 if self.plans else 0)
        if len(probabilities) != heads:
            raise ValueError(f"The policy acts on {len(probabilities)} heads but the run needs {heads}.")
        action = [int(np.argmax(p)) for p in probabilities]  # SB3's deterministic action: the mode per head
        names = [self.actions[a] for a in action[:ctx.num_groups]]
        detail = ", ".join(f"g{g} {n} (p={p[a]:.2f})"
                           for g, (n, a, p) in enumerate(zip(names, action, probabilities, strict=False)))
        plan = self.plans[action[-1]] if self.plans and ctx.step == 0 else NO_PLAN
        planned = plan_ranks(plan, ctx.num_groups)
        if planned is not None:
            planned = [min(rank, ctx.r_max) for rank in planned]
            return Decision(planned, f"policy: plan {plan} (p={probabilities[-1][action[-1]]:.2f}); {detail}",
                            probabilities=probabilities, action=action, frozen=[False] * ctx.num_groups)
        frozen = list(ctx.frozen) if ctx.frozen else [False] * ctx.num_groups
        targets = []
        for g, (rank, name) in enumerate(zip(ctx.group_ranks, names, strict=True)):
            if name in (FREEZE, THAW):
                targets.append(rank)
                frozen[g] = name == FREEZE
            else:
                targets.append(min(max(rank + int(name), 0), ctx.r_max))
        return Decision(targets, f"policy: {detail}", probabilities=probabilities, action=action, frozen=frozen)

    def _policy(self):
        if self.policy is None:
            raise RuntimeError("LearnedController.bind() (or prepare_controller) must run before the first "
                               "decision: it loads the policy and checks it against the run.")
        return self.policy.policy


def check_env_version(metadata: dict, path: Path | str, *, exact: bool = False) -> int:
    """The environment version a policy was trained on, if this rankrl can run it; else a clear error.

    Deployment takes every version from v1 (they differ in the observation, which :class:`LearnedController`
    builds in the policy's layout, and v3 adds the plan head, which it reads when there is one); ``exact``
    (training on from a policy) takes only the current version. A policy that names no version is taken as
    the current one.
    """
    env_id = str(metadata.get("env_id") or "")
    version = env_id.rpartition("-v")[2]
    trained = int(version) if version.isdigit() else (0 if "deltas" in metadata and "actions" not in metadata else None)
    if trained is None:
        return ENV_VERSION
    accepted = {ENV_VERSION} if exact else set(OBSERVATION_VERSIONS)
    if trained not in accepted:
        preset = env_id.partition("/")[2].rpartition("-v")[0] or "default"
        meaning = ("its observation differs from this environment's" if trained in OBSERVATION_VERSIONS
                   else "its actions and observations mean other things")
        raise PolicyFileError(
            f"The policy {path} was trained on environment v{trained} ({env_id or 'rank deltas only'}), and this "
            f"rankrl {'trains' if exact else 'runs'} v{ENV_VERSION}: {meaning}. "
            f"Retrain it: rankrl train --env {preset}."
        )
    return trained
