"""Teacher anchor: PPO keeps a decaying pull towards the teacher it was cloned from.

Behaviour cloning starts PPO at the teacher, but nothing keeps it there where PPO's advantage is only noise:
an episode's accuracy is measured on a small held-out set, so after a few thousand decisions an unanchored
policy can drift to whatever one allocation the noise favoured, on every task alike. The anchor is the
auxiliary loss of DAPG (Rajeswaran et al., 2018, "Learning Complex Dexterous Manipulation with Deep
Reinforcement Learning and Demonstrations"): after each rollout, as many mini-batch steps as PPO's own
update takes, on ``weight(t) * -log pi(a_teacher | obs)`` over the teacher's decisions, where

    weight(t) = weight_0 * 0.5 ** (t / half_life)

and ``t`` counts environment steps. A departure from the teacher survives only where PPO's advantage
outweighs the pull; as the weight halves, PPO is trusted more.

SB3's PPO has no auxiliary loss and the ``imitation`` library's BC trains apart from the RL update, hence this
callback. It uses PPO's own optimizer (one Adam state for both losses, as one summed loss would have) and
the policy's ``evaluate_actions``, the log-probability PPO's ratio uses.
"""

from __future__ import annotations

import math

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from rankrl.train.imitation import ImitationDataset

DEFAULT_ANCHOR = 0.2
DEFAULT_HALF_LIFE = 0.5


class TeacherAnchor(BaseCallback):
    """After each rollout, pull the policy towards the teacher's decisions with a weight that halves over time.

    Args:
        dataset: The teacher's decisions (checked against the environment's layout beforehand).
        weight: The weight at step 0 (``weight_0``); 0 turns the anchor off.
        half_life: Environment steps over which the weight halves (``inf``: a constant weight).
        seed: Seed of the mini-batch draws.

    Logs ``anchor/weight`` and ``anchor/nll`` (the mean negative log-likelihood of the teacher's actions).
    """

    def __init__(self, dataset: ImitationDataset, weight: float = DEFAULT_ANCHOR, half_life: float = math.inf,
                 seed: int = 0) -> None:
        super().__init__()
        if not (weight >= 0 and math.isfinite(weight)) or not half_life > 0:
            raise ValueError(f"The teacher anchor needs weight >= 0 and half_life > 0; got {weight}, {half_life}.")
        if len(dataset) == 0:
            raise ValueError("The teacher anchor needs a non-empty imitation dataset.")
        self.dataset, self.weight0, self.half_life = dataset, float(weight), float(half_life)
        self.rng = np.random.default_rng(seed)
        self.last_nll: float | None = None

    def weight_at(self, timesteps: int) -> float:
        """The anchor's weight after ``timesteps`` environment steps."""
        return self.weight0 * 0.5 ** (timesteps / self.half_life)

    def updates_per_rollout(self) -> int:
        """PPO's gradient steps per rollout: ``n_epochs * ceil(n_steps * n_envs / batch_size)`` (1 for A2C)."""
        model = self.model
        epochs = int(getattr(model, "n_epochs", 1))
        batch = int(getattr(model, "batch_size", 0) or model.n_steps * model.n_envs)
        return epochs * math.ceil(model.n_steps * model.n_envs / batch)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        weight = self.weight_at(self.model.num_timesteps)
        self.logger.record("anchor/weight", weight)
        if weight > 0:
            self.last_nll = self.pull(weight, self.updates_per_rollout())
            self.logger.record("anchor/nll", self.last_nll)

    def pull(self, weight: float, steps: int) -> float:
        """``steps`` mini-batch steps of ``weight * -log pi(a_teacher | obs)`` with PPO's optimizer.

        Returns the mean negative log-likelihood before each step (unweighted).
        """
        import torch

        policy = self.model.policy
        batch = int(getattr(self.model, "batch_size", 64) or 64)
        observations = torch.as_tensor(self.dataset.observations, device=policy.device)
        actions = torch.as_tensor(self.dataset.actions, device=policy.device)
        total = 0.0
        policy.set_training_mode(True)
        try:
            for _ in range(steps):
                index = torch.as_tensor(self.rng.integers(len(self.dataset), size=min(batch, len(self.dataset))),
                                        device=policy.device)
                _, log_prob, _ = policy.evaluate_actions(observations[index], actions[index])
                nll = -log_prob.mean()
                policy.optimizer.zero_grad()
                (weight * nll).backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), self.model.max_grad_norm)
                policy.optimizer.step()
                total += float(nll.detach())
        finally:
            policy.set_training_mode(False)
        return total / max(steps, 1)
