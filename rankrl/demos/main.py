"""The main job, end to end: learn a rank policy, deploy it next to the baselines, compare.

``rankrl demo`` (``make demo``) runs, with progress throughout:

1. ``rankrl train`` on the ``default`` environment preset (a 4-layer tiny BERT, all synthetic tasks): the
   policy first clones a rule controller (``--teacher``, behaviour cloning on its episodes), then PPO
   continues in the teacher's episodes, rewarded against the teacher, to move LoRA rank and freeze layer
   groups.
2. ``rankrl finetune`` of the embedded pretrained MiniLM-L6 on a held-out synthetic task (a difficulty and a
   data seed the policy never trained on, on a model it never saw) under a memory budget that steps down
   (``budget_high`` of the reference memory, then ``budget_frac`` from half-way: a co-tenant job starts),
   with the freshly trained policy and the baselines a skeptic asks for: ``static-fit`` (the best static
   allocation a fixed rule picks for the lowest budget), ``autofreeze`` (AutoFreeze) and plain LoRA at rank 8
   (``fixed``, which the wall must free memory for when the budget drops). Same data, steps, learning rate,
   seed and budget.
3. A comparison table (accuracy, measured mean and peak memory, training time, final ranks with frozen groups
   marked, wall violations), written as ``comparison.md`` and ``comparison.csv``, and ``rankrl explain`` PNGs
   of every run.

Everything lands in one new run directory ``<out>/demo_<n>/`` (never overwritten).
"""

from __future__ import annotations

import csv
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from rankrl.runs import new_run_dir, write_config
from rankrl.settings import setting, shared, split_list

HELD_OUT_TASK = "synthetic:negation?difficulty=0.5&n_train=2000&n_eval=256&seed=7"


@dataclass
class DemoConfig:
    """Settings of :func:`run_demo` and the flags of ``rankrl demo`` (saved as the demo's ``config.json``)."""

    env: str = setting("default", "Environment preset the policy trains on.", panel="Policy training")
    agent: str = setting("ppo-clone", "Agent preset of the policy's training.", panel="Policy training")
    teacher: str = setting("static-fit", "Rule controller the policy clones before PPO ('none': PPO from scratch).",
                           panel="Policy training")
    bc_episodes: int = setting(12, "Teacher episodes to clone.", panel="Policy training")
    timesteps: int = setting(384, "Decisions PPO trains for on the env preset after cloning.",
                             panel="Policy training")
    eval_episodes: int = setting(3, "Held-out episodes of each evaluation during training.", panel="Policy training")
    n_envs: int = setting(2, "Parallel training environments.", panel="Policy training")
    model: str = shared("model", "default")
    task: str = setting(HELD_OUT_TASK, "Held-out task of the deployment runs (default: a synthetic task at a "
                        "difficulty and data seed the policy never trained on).", panel="Model and task")
    steps: int = shared("steps", 150)
    every: int = shared("every", 15)
    eval_size: int = shared("eval_size", 256)
    max_length: int = shared("max_length", 48)
    lr: float = shared("lr", 1e-3)
    rank: int = shared("rank", 8)
    use_rslora: bool = shared("use_rslora", False)
    budget_frac: float = setting(0.6, "Budget after the step down, as a fraction of the reference memory (the "
                                 "run at --rank with every group training).", panel="Memory budget")
    budget_high: float = setting(0.9, "Budget before the step down (half-way), as a fraction of the reference "
                                 "memory.", panel="Memory budget")
    controllers: list[str] = setting(
        help="Comma-separated controllers to compare ('learned' = the policy just trained, 'learned:default' = "
        "the shipped one).", panel="Controller", parse=split_list,
        default_factory=lambda: ["learned", "static-fit", "autofreeze", "fixed"])
    seed: int = setting(0, "Seed of training and of the deployment runs.", panel="Training")
    out: str = setting("runs/demo", "Parent of the demo's run directory (<out>/demo_<n>).", panel="Run")

    def check(self) -> None:
        """Raise ``ValueError`` naming the first bad flag."""
        for flag, value in {"--timesteps": self.timesteps, "--n-envs": self.n_envs, "--steps": self.steps,
                            "--every": self.every, "--bc-episodes": self.bc_episodes,
                            "--eval-episodes": self.eval_episodes}.items():
            if value < 1:
                raise ValueError(f"{flag} must be a positive integer, got {value}.")
        if not self.controllers:
            raise ValueError("--controllers must name at least one controller.")
        if not 0 < self.budget_frac <= self.budget_high:
            raise ValueError(f"--budget-frac must be in (0, {self.budget_high:g}], got {self.budget_frac}.")


@dataclass
class DemoResult:
    """What the demo produced: its directory, the trained policy, one row per controller, the PNGs."""

    run_dir: Path
    policy_dir: Path
    rows: list[dict]
    pngs: list[Path]


def _controller_specs(config: DemoConfig, policy_dir: Path) -> list[tuple[str, str]]:
    """``(label, spec)`` per controller: ``learned`` is the policy just trained; ``learned:default`` is skipped
    when the package ships no default policy."""
    from rankrl.policy import list_shipped_policies

    specs = []
    for spec in config.controllers:
        if spec == "learned":
            specs.append(("learned (just trained)", f"learned:{policy_dir}"))
        elif spec == "learned:default":
            if "default" in list_shipped_policies():
                specs.append(("learned:default (shipped)", spec))
        elif spec == "fixed":
            specs.append((f"fixed r={config.rank}", f"fixed:{config.rank}"))
        else:
            specs.append((spec, spec))
    return specs


def run_demo(config: DemoConfig | None = None, console: Console | None = None, progress: bool = True) -> DemoResult:
    """Train a policy, fine-tune with it and the baselines, and print the comparison (see the module docstring).

    Raises:
        ValueError: bad settings, an unknown preset, model, task or controller (before anything is written).
    """
    from rankrl.controllers import make_controller
    from rankrl.data import load_task_data
    from rankrl.deploy.explain import explain_run
    from rankrl.deploy.finetune import METRICS_FILE, FinetuneConfig, run_finetune
    from rankrl.env import load_env_config
    from rankrl.env.registration import env_id
    from rankrl.models import load_tokenizer
    from rankrl.train import load_agent_config, train_policy

    config = config or DemoConfig()
    console = console or Console()
    config.check()
    env_config = load_env_config(config.env)  # fail on a bad preset, task or controller before writing anything
    load_agent_config(config.agent, env_name=env_config.name)
    load_task_data(config.task, seed=config.seed)
    load_tokenizer(config.model)  # an unknown model fails here, with the choices named
    for spec in config.controllers:
        if spec not in ("learned", "learned:default"):  # the policy is trained below; the shipped one is optional
            make_controller(spec)
    run_dir = new_run_dir(config.out, "demo")
    write_config(run_dir, {"command": "demo", **asdict(config)})
    trace = run_dir / "budget_trace.csv"
    trace.write_text(f"step,budget_frac\n0,{config.budget_high}\n{config.steps // 2},{config.budget_frac}\n")
    started = time.perf_counter()

    teacher = None if config.teacher == "none" else config.teacher
    cloning = f"clone {teacher!r} on {config.bc_episodes} episodes, then " if teacher else ""
    console.rule(f"[bold]1/3  Learn a rank policy[/]: {cloning}{config.agent} on {env_id(env_config.name)}, "
                 f"{config.timesteps} decisions, {config.n_envs} workers")
    console.print(f"  {env_config.description}")
    policy_dir = train_policy(env=config.env, agent=config.agent, timesteps=config.timesteps, n_envs=config.n_envs,
                              seed=config.seed, out=run_dir / "policy", progress=progress, teacher=teacher,
                              bc_episodes=config.bc_episodes if teacher else None,
                              eval_episodes=config.eval_episodes, eval_points=1,
                              say=lambda text: console.print(f"  {text}"))
    _print_evaluations(console, policy_dir)
    console.print(f"  policy: {policy_dir / 'policy.json'} (+ policy.safetensors)")

    specs = _controller_specs(config, policy_dir)
    console.rule(f"[bold]2/3  Deploy[/]: fine-tune {config.model} on the held-out task with {len(specs)} controllers")
    console.print(f"  budget: {config.budget_high:g} of the reference memory, {config.budget_frac:g} from step "
                  f"{config.steps // 2} on ({trace})")
    rows, pngs = [], []
    for label, spec in specs:
        out = run_dir / "finetune" / _slug(label)
        finetune = FinetuneConfig(model=config.model, data=config.task, controller=spec, steps=config.steps,
                                  every=config.every, eval_size=config.eval_size, lr=config.lr, rank=config.rank,
                                  max_length=config.max_length, num_groups=env_config.num_action_groups,
                                  use_rslora=config.use_rslora, seed=config.seed, out=str(out),
                                  budget_trace=str(trace), memory_scope="adapter")
        finished = run_finetune(finetune, console=console, progress=progress)
        metrics = json.loads((finished / METRICS_FILE).read_text())
        rows.append(_row(label, metrics))
        explanation = explain_run(finished)
        pngs.append(explanation.png)

    console.rule("[bold]3/3  Compare[/]")
    table = _table(rows, config)
    console.print(table)
    _write_comparison(run_dir, rows, config)
    pngs = [policy_dir / "learning_curve.png", *pngs]
    console.print("Pictures:")
    for png in pngs:
        console.print(f"  {png}")
    console.print(f"Comparison: {run_dir / 'comparison.md'}  (all runs: {run_dir}; "
                  f"TensorBoard: tensorboard --logdir {run_dir})")
    console.print(f"Done in {(time.perf_counter() - started) / 60:.1f} min.")
    return DemoResult(run_dir=run_dir, policy_dir=policy_dir, rows=rows, pngs=pngs)


def _print_evaluations(console: Console, policy_dir: Path) -> None:
    """The policy on the held-out episodes before and after PPO, paired with the rules on the same episodes."""
    from rankrl.train.callbacks import read_evaluations

    evaluations = read_evaluations(policy_dir)
    for record in evaluations[:1] + evaluations[-1:]:
        when = "before PPO" if record["timesteps"] == 0 else f"after {record['timesteps']} decisions"
        paired = record.get("paired", {}).items()
        versus = ", ".join(f"{value['return']['mean']:+.3f} vs {name}" for name, value in paired)
        console.print(f"  held-out, {when}: return {record['policy_return']:+.3f}, accuracy "
                      f"{record['policy_accuracy']:.3f} ({versus})")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-")


def _row(label: str, metrics: dict) -> dict:
    frozen = metrics.get("frozen_groups") or [False] * len(metrics["group_ranks"])
    return {
        "controller": label,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "peak_adapter_mib": metrics["peak_memory_adapter_mib"],
        "peak_total_mib": metrics["peak_memory_total_mib"],
        "mean_adapter_mib": metrics["mean_memory_adapter_mib"],
        "trainable_params": metrics["trainable_params"],
        "peak_trainable_params": metrics["peak_trainable_params"],
        "final_ranks": " ".join(f"{r}{'*' if f else ''}" for r, f in zip(metrics["group_ranks"], frozen, strict=True)),
        "wall_violations": metrics.get("wall_violations", 0),
        "controller_overhead": metrics["controller_overhead"],
        "train_seconds": metrics["train_seconds"],
    }


# The columns of comparison.md / comparison.csv.
COLUMNS = [("controller", "controller", "{}"), ("accuracy", "acc", "{:.3f}"),
           ("mean_adapter_mib", "mean MiB", "{:.1f}"), ("peak_adapter_mib", "peak MiB", "{:.1f}"),
           ("train_seconds", "train s", "{:.0f}"), ("final_ranks", "ranks (*frozen)", "{}"),
           ("wall_violations", "over wall", "{}")]
# The printed table: these figures beside the controller's full name, its final ranks on a line below, so that
# it reads at 80 columns (a log, a narrow terminal) without cutting a name.
FIGURES = [column for column in COLUMNS if column[0] not in ("controller", "final_ranks")]


def _table(rows: list[dict], config: DemoConfig) -> Table:
    """Two lines per controller: its full name and figures, then its final ranks (``*``: frozen group)."""
    table = Table(title=f"{config.model}, {config.steps} steps, seed {config.seed}, budget {config.budget_high:g} "
                        f"-> {config.budget_frac:g} x reference (adapter MiB)", box=box.SIMPLE_HEAD)
    table.add_column("controller / final ranks", overflow="fold")
    for _, header, _ in FIGURES:
        table.add_column(header.replace(" ", "\n"), justify="right", overflow="fold")  # narrow: two-line headers
    for row in rows:
        table.add_row(row["controller"], *(fmt.format(row[key]) for key, _, fmt in FIGURES))
        table.add_row(f"  ranks {row['final_ranks']}", *[""] * len(FIGURES), style="dim")
    return table


def _write_comparison(run_dir: Path, rows: list[dict], config: DemoConfig) -> None:
    with (run_dir / "comparison.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# rankrl demo: {config.model} on `{config.task}`", "",
             f"{config.steps} optimizer steps, lr {config.lr}, batch 16, seed {config.seed}; budget "
             f"{config.budget_high:g} of the reference memory, {config.budget_frac:g} from step {config.steps // 2} "
             "on; memory is adapter memory in MiB; `*` marks a frozen group. One seed, so differences of a few "
             "points are inside the noise (`rankrl bench` runs seeds and reports the spread).", "",
             "| " + " | ".join(header for _, header, _ in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |" for row in rows]
    (run_dir / "comparison.md").write_text("\n".join(lines) + "\n")
