"""What a learned controller would do at one logged decision as one feature moves: a policy's breakpoints.

A decision log (``decisions.jsonl`` of ``rankrl finetune`` or a ``bench`` run) holds the observation each
decision saw. This replays one of them through the policy, as :class:`~rankrl.controllers.LearnedController`
deploys it (the policy's own observation layout, the mode of each group), with one feature set to each of
``--values`` in turn, and prints the actions per group with their probabilities (and, for a policy of
environment v3, its plan: what it sets at a run's first decision). ``--scale`` multiplies
every feature whose name ends with one of the given suffixes first: for example the per-group memory costs,
which are fractions of the budget in force and so halve when the budget doubles.

    python benchmarks/policy_sweep.py POLICY RUN_DIR --feature budget/floor_frac --values 0.4,0.5,0.6 \\
        [--decision 0] [--scale grow_cost_frac,freeze_free_frac=2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from rankrl.controllers import DecisionLog
from rankrl.controllers.learned import LearnedController


def observation(run_dir: Path, decision: int) -> dict[str, float]:
    records = DecisionLog.read(run_dir)
    if not 0 <= decision < len(records):
        raise SystemExit(f"{run_dir} has {len(records)} decisions; --decision must be in 0..{len(records) - 1}.")
    return dict(records[decision]["observation"])


def scaled(features: dict[str, float], scale: str | None) -> dict[str, float]:
    if not scale:
        return features
    suffixes, _, factor = scale.rpartition("=")
    ends = tuple(s.strip() for s in suffixes.split(",") if s.strip())
    return {k: v * float(factor) if k.endswith(ends) else v for k, v in features.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", help="A policy directory or policy.json (as for --controller learned:PATH).")
    parser.add_argument("run_dir", type=Path, help="A run directory with decisions.jsonl.")
    parser.add_argument("--feature", required=True, help="The observation feature to move, e.g. budget/floor_frac.")
    parser.add_argument("--values", required=True, help="Comma-separated values of the feature.")
    parser.add_argument("--decision", type=int, default=0, help="Which logged decision (0: the first).")
    parser.add_argument("--scale", default=None, help="SUFFIX[,SUFFIX..]=FACTOR: multiply those features first.")
    args = parser.parse_args()

    features = scaled(observation(args.run_dir, args.decision), args.scale)
    if args.feature not in features:
        raise SystemExit(f"Unknown feature {args.feature!r}; the log has: {', '.join(sorted(features))}.")
    groups = sum(1 for name in features if name.endswith("/rank_frac"))
    controller = LearnedController(args.policy)
    meta = controller.metadata
    controller.bind(num_groups=groups, split_by_kind=False, r_max=int(meta.get("r_max") or 16),
                    rank_step=int(meta.get("rank_step") or 1), total_steps=None)
    assert controller.layout is not None and controller.actions is not None
    print(f"{args.run_dir}, decision {args.decision}, {args.feature} from {features[args.feature]:.3f}"
          + (f", scaled {args.scale}" if args.scale else ""))
    for value in (float(v) for v in args.values.split(",")):
        probabilities = controller.probabilities(controller.layout.vector({**features, args.feature: value}))
        cells = [f"g{g} {controller.actions[int(np.argmax(p))]} ({max(p):.2f})"
                 for g, p in enumerate(probabilities[:groups])]
        if controller.plans:
            plan = probabilities[groups]
            cells.append(f"plan {controller.plans[int(np.argmax(plan))]} ({max(plan):.2f})")
        print(f"  {args.feature} = {value:<6g} " + "  ".join(f"{c:<16}" for c in cells))


if __name__ == "__main__":
    main()
