"""``rankrl explain RUN_DIR``: one picture and a short text of what a rank controller did in a run.

Panels, all from ``decisions.jsonl`` (and ``metrics.json`` / ``config.json`` when present):

1. rank per group over training (heatmap; each column holds from one decision to the next);
2. training loss (EMA at each decision) and eval accuracy;
3. memory measured before and after each decision against the budget, with wall hits marked;
4. for a learned policy, which observation features moved its decisions most: input-gradient saliency,
   the mean over decisions of ``|x * d log pi(a|x) / dx|`` for the action it took; for a heuristic, the
   groups' importance shares, which most rules follow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rankrl.controllers import DECISIONS_FILE, DecisionLog
from rankrl.controllers.base import MIB
from rankrl.env.observation import ObservationLayout
from rankrl.policy import load_policy
from rankrl.runs import check_writable

PNG_FILE = "explain.png"


@dataclass
class Explanation:
    """What :func:`explain_run` produced.

    Attributes:
        png: The picture.
        summary: The printed text.
        saliency: ``(feature, mean |grad x input|, mean grad x input)``, largest first (learned policies).
    """

    png: Path
    summary: str
    saliency: list[tuple[str, float, float]] = field(default_factory=list)


def find_decisions(run_dir: str | Path) -> Path:
    """``decisions.jsonl`` of a finetune run directory or of a Trainer ``output_dir`` (its ``rankrl/``)."""
    run_dir = Path(run_dir)
    for path in (run_dir, run_dir / DECISIONS_FILE, run_dir / "rankrl" / DECISIONS_FILE):
        if path.is_file():
            return path
    config = _json(run_dir / "config.json") if (run_dir / "config.json").exists() else {}
    if config.get("command") == "finetune":
        metrics = _json(run_dir / "metrics.json") if (run_dir / "metrics.json").exists() else {}
        if metrics.get("diverged"):
            raise ValueError(f"{run_dir} diverged at step {metrics.get('diverged_at_step')}, before its first "
                             f"decision (every {config.get('every')} steps): there is nothing to explain. Lower "
                             "--lr and run it again.")
        raise ValueError(f"{run_dir} stopped before its first decision (every {config.get('every')} steps): there "
                         f"is nothing to explain yet" + ("." if metrics else "; continue it with "
                                                           f"`rankrl finetune --resume {run_dir}`."))
    raise FileNotFoundError(f"No {DECISIONS_FILE} in {run_dir}: pass a directory written by `rankrl finetune` or "
                            "a Trainer output_dir that used RankRLCallback.")


def policy_saliency(policy_path: str | Path, records: list[dict],
                    trust_policy: bool = False) -> list[tuple[str, float, float]]:
    """Input-gradient saliency of a policy's chosen actions over the logged decisions.

    For every decision with policy levels, the gradient of ``log pi(action | observation)`` (summed over
    groups) with respect to the observation vector, times the observation (gradient x input).

    Returns:
        ``(feature, mean |grad x input|, mean grad x input)`` per feature, largest mean absolute value first.
    """
    rows = [r for r in records if r.get("action_kind") == "policy_levels"]
    if not rows:
        return []
    groups = len(rows[0]["ranks_after"])
    saved = load_policy(policy_path, None, trust_policy=trust_policy).features
    layout = ObservationLayout.of(saved) if saved else ObservationLayout(groups)  # the policy's own layout version
    if saved:
        layout.check(saved, source=f"The policy {policy_path}")
    if layout.num_groups != groups:
        ObservationLayout(groups, layout.version).check(layout.to_dict(), source=f"The policy {policy_path}")
    policy = load_policy(policy_path, layout, trust_policy=trust_policy).policy
    policy.set_training_mode(False)
    vectors = np.stack([layout.vector(r["observation"]) for r in rows])
    obs = torch.as_tensor(vectors, dtype=torch.float32, device=policy.device).requires_grad_(True)
    actions = torch.as_tensor([r["action"] for r in rows], dtype=torch.long, device=policy.device)
    log_prob = policy.get_distribution(obs).log_prob(actions)
    log_prob.sum().backward()
    attribution = (obs.grad * obs).detach().cpu().numpy()
    mean_abs, mean = np.abs(attribution).mean(0), attribution.mean(0)
    order = np.argsort(-mean_abs, kind="stable")
    return [(layout.names[i], float(mean_abs[i]), float(mean[i])) for i in order]


def explain_run(run_dir: str | Path, out: str | Path | None = None, policy: str | Path | None = None,
                top_k: int = 8, trust_policy: bool = False) -> Explanation:
    """Draw the run's PNG and return it with a text summary.

    Args:
        run_dir: A ``rankrl finetune`` run directory (or a Trainer output_dir, or a decisions.jsonl).
        out: PNG path; default ``RUN_DIR/explain.png`` (beside ``decisions.jsonl``).
        policy: The policy for the saliency panel; default the run's own ``learned:PATH``.
        top_k: Features in the saliency panel and summary.
        trust_policy: Allow a bare SB3 zip as the policy (it is unpickled). Without it, a run whose policy is
            a zip is drawn without the saliency panel (a note says why), and ``policy`` must be data.

    Raises:
        FileNotFoundError: no decisions.jsonl; ValueError: it holds no decisions, bad ``top_k``, an ``out``
            that cannot be written, an explicit ``policy`` that cannot be loaded.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"--top-k must be a positive number of features, got {top_k}.")
    path = find_decisions(run_dir)
    records = DecisionLog.read(path)
    if not records:
        raise ValueError(f"{path} holds no decisions: the run stopped before its first decision.")
    base = path.parent
    config = _json(base / "config.json")
    metrics = _json(base / "metrics.json")
    spec = config.get("controller_spec") or records[0].get("controller", "?")
    png = Path(out) if out is not None else base / PNG_FILE
    check_writable(png.parent, "--out")
    explicit = policy is not None
    if policy is None and str(spec).startswith("learned:"):
        policy = spec.partition(":")[2]
    saliency, note = [], None
    if policy is not None and any(r.get("action_kind") == "policy_levels" for r in records):
        try:
            saliency = policy_saliency(policy, records, trust_policy=trust_policy)
        except (ValueError, FileNotFoundError) as err:
            if explicit:
                raise
            note = f"saliency skipped: {err}"
    _draw(records, metrics, saliency, top_k, spec, png)
    summary = _summary(records, metrics, saliency, top_k, spec, png, note)
    return Explanation(png=png, summary=summary, saliency=saliency)


def _json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); it is damaged.") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object; it is damaged.")
    return value


def _draw(records: list[dict], metrics: dict, saliency: list, top_k: int, spec: str, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    groups = len(records[0]["ranks_after"])
    interval = steps[-1] - steps[-2] if len(steps) > 1 else max(steps[-1], 1)
    edges = [0, *steps, max(metrics.get("steps") or 0, steps[-1] + interval)]  # the last column: the final ranks
    ranks = np.array([records[0]["ranks_before"]] + [r["ranks_after"] for r in records], dtype=float).T
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    ax = axes[0, 0]
    mesh = ax.pcolormesh(edges, np.arange(groups + 1) - 0.5, ranks, cmap="viridis", shading="flat",
                         vmin=0, vmax=max(records[0].get("r_max") or ranks.max(), 1))
    fig.colorbar(mesh, ax=ax, label="rank")
    if ranks.shape[1] <= 30 and groups <= 12:
        for k in range(ranks.shape[1]):
            for g in range(groups):
                ax.text((edges[k] + edges[k + 1]) / 2, g, f"{ranks[g, k]:.0f}", ha="center", va="center",
                        color="white" if ranks[g, k] < ranks.max() / 2 else "black", fontsize=8)
    frozen = [records[0].get("frozen_before") or [False] * groups] + [r.get("frozen_after") or [False] * groups
                                                                      for r in records]
    for k, flags in enumerate(frozen):  # frozen groups: hatched (they keep their update, train no more)
        for g, flag in enumerate(flags):
            if flag:
                ax.add_patch(matplotlib.patches.Rectangle((edges[k], g - 0.5), edges[k + 1] - edges[k], 1,
                                                          fill=False, hatch="///", edgecolor="white", lw=0))
    ax.set(xlabel="optimizer step", ylabel="layer group (bottom = 0)",
           title="Rank per group (hatched: frozen)" if any(any(f) for f in frozen) else "Rank per group",
           yticks=range(groups))
    ax = axes[0, 1]
    loss = [(r["step"], r["train_loss"]) for r in records if r.get("train_loss") is not None]
    if loss:
        ax.plot(*zip(*loss, strict=True), "o-", color="tab:blue", label="train loss (EMA)")
    ax.set(xlabel="optimizer step", ylabel="train loss", title="Loss and accuracy")
    twin = ax.twinx()
    accuracy = [(r["step"], r["eval_accuracy"]) for r in records if r.get("eval_accuracy") is not None]
    if metrics.get("initial_accuracy") is not None:
        accuracy.insert(0, (0, metrics["initial_accuracy"]))
    if metrics.get("accuracy") is not None:
        accuracy.append((metrics.get("steps", steps[-1]), metrics["accuracy"]))
    if accuracy:
        twin.plot(*zip(*accuracy, strict=True), "s--", color="tab:green", label="eval accuracy")
    twin.set_ylabel("eval accuracy")
    twin.set_ylim(0, 1.02)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.8)
    ax = axes[1, 0]
    before = [(r["step"], r["memory_before"] / MIB) for r in records if r.get("memory_before") is not None]
    after = [(r["step"], r["memory_after"] / MIB) for r in records if r.get("memory_after") is not None]
    if before:
        ax.plot(*zip(*before, strict=True), "o", color="tab:gray", label="before decision")
    if after:
        ax.step(*zip(*after, strict=True), "-", where="post", color="tab:blue", label="after decision (measured)")
    budgets = [(r["step"], r["budget"] / MIB) for r in records if r.get("budget")]
    if budgets:
        budgets.append((edges[-1], budgets[-1][1]))
        moving = len({b for _, b in budgets}) > 1
        ax.step(*zip(*budgets, strict=True), "--", where="post", color="tab:red",
                label="budget (moving)" if moving else f"budget {budgets[-1][1]:.2f} MiB")
    hits = [(r["step"], r["memory_after"] / MIB) for r in records if r.get("clipped_groups") and r.get("memory_after")]
    if hits:
        ax.plot(*zip(*hits, strict=True), "x", color="tab:red", markersize=10, label="wall hit")
    ax.set(xlabel="optimizer step", ylabel=f"MiB ({records[-1].get('memory_scope', 'total')})",
           title="Memory against the budget")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    if saliency:
        shown = saliency[:top_k][::-1]
        colors = ["tab:orange" if m >= 0 else "tab:purple" for _, _, m in shown]
        ax.barh([n for n, _, _ in shown], [a for _, a, _ in shown], color=colors)
        ax.set(xlabel="mean |x · ∂ log π(a|x) / ∂x|",
               title="What moved the policy (orange: pushed towards its action on average)")
        ax.tick_params(axis="y", labelsize=8)
    else:
        for g in range(groups):
            share = [(r["step"], r["observation"].get(f"group{g}/importance_share", 0.0)) for r in records]
            ax.plot(*zip(*share, strict=True), "o-", label=f"group {g}")
        ax.set(xlabel="optimizer step", ylabel="importance share", title="Importance share per group", ylim=(0, 1))
        ax.legend(fontsize=8)
    fig.suptitle(f"rankrl explain: {_short(spec)}", fontsize=11)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _summary(records: list[dict], metrics: dict, saliency: list, top_k: int, spec: str, png: Path,
             note: str | None) -> str:
    steps = [r["step"] for r in records]
    changes = sum(r["ranks_after"] != r["ranks_before"] for r in records)
    hits = sum(bool(r.get("clipped_groups")) for r in records)
    used = [r["memory_after"] for r in records if r.get("memory_after") is not None]
    budget = records[-1].get("budget")
    lines = [f"controller {_short(spec)}: {len(records)} decisions at steps {steps[0]}..{steps[-1]}, {changes} changed "
             f"the ranks, {hits} hit the memory wall",
             f"ranks per group: start {records[0]['ranks_before']} -> end {records[-1]['ranks_after']}"]
    peak = metrics.get("peak_memory_bytes") or (max(used) if used else None)
    scope = records[-1].get("memory_scope", "total")
    if metrics.get("peak_memory_bytes"):  # a finetune run states its figures in one scope, its wall included
        scope = metrics.get("memory_scope") or scope
        budget = metrics["budget_mib"] * MIB if metrics.get("budget_mib") is not None else None
    if peak is not None:
        lines.append(f"memory ({scope} scope): peak {peak / MIB:.2f} MiB"
                     + (f" of a {budget / MIB:.2f} MiB budget" if budget else " (no budget)"))
    if metrics.get("accuracy") is not None:
        lines.append(f"accuracy: {metrics.get('initial_accuracy', float('nan')):.3f} at the start -> "
                     f"{metrics['accuracy']:.3f} at the end (macro-F1 {metrics.get('macro_f1', float('nan')):.3f})")
    if saliency and not any(a for _, a, _ in saliency):
        lines.append("policy saliency: every gradient is 0; the policy's choices do not depend on its observation")
    elif saliency:
        lines.append("policy saliency (mean |grad x input| of the chosen action's log-prob): "
                     + ", ".join(f"{n} {a:.3g}" for n, a, _ in saliency[:top_k]))
        kinds: dict[str, float] = {}
        for name, value, _ in saliency:
            kind = name.split("/", 1)[1] if name.startswith("group") else name
            kinds[kind] = kinds.get(kind, 0.0) + value
        ranked = sorted(kinds.items(), key=lambda item: -item[1])[:5]
        lines.append("  by feature, summed over groups: " + ", ".join(f"{k} {v:.3g}" for k, v in ranked))
    if metrics.get("diverged"):
        lines.append(f"the run diverged at step {metrics.get('diverged_at_step')} (non-finite loss): no adapter was "
                     "saved and it is not a result; lower --lr and run it again")
    if note:
        lines.append(note)
    lines.append(f"picture: {png}")
    return "\n".join(lines)


def _short(spec: str) -> str:
    name, _, arg = str(spec).partition(":")
    return f"{name}:{Path(arg).parent.name}/{Path(arg).name}" if name == "learned" and arg else str(spec)
