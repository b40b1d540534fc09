"""The ``rankrl`` command line. Each command is a thin shell over a library function of the same name."""

from __future__ import annotations

import os
import sys

import typer

from rankrl import interrupt

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Learn how to spend LoRA rank.",
                  pretty_exceptions_enable=False)


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


DIVERGED_EXIT = 3
"""Exit code of a run whose loss became non-finite (no adapter, not a result)."""

# Reliability options shared by several commands (docs/reliability.md).
TRUST_HELP = ("Allow a bare stable-baselines3 policy.zip, which can run code when loaded (it holds pickled "
              "objects). Without it only policies saved as data (policy.json + policy.safetensors) load.")
CHECKPOINT_HELP = "Steps between checkpoints that --resume continues from"
ENCODING_HELP = "Text encoding of data files (default utf-8; e.g. latin-1, cp1252)."
DROP_INVALID_HELP = "Leave out rows with an empty label (counted) instead of refusing them with their row numbers."


def _continue_command(flag: str = "--resume") -> str:
    """The command line that was run, with ``flag`` added: what continues an interrupted benchmark."""
    import shlex

    args = sys.argv[1:]
    return shlex.join(["rankrl", *args] + ([] if flag in args else [flag]))


@app.command()
def demo(
    timesteps: int = typer.Option(1024, "--timesteps", help="Decisions the policy trains for on the env preset."),
    n_envs: int = typer.Option(2, "--n-envs", help="Parallel training environments."),
    env: str = typer.Option("default", "--env", help="Environment preset the policy trains on."),
    model: str = typer.Option("default", "--model", help="Model of the deployment runs ('default' = MiniLM-L6)."),
    task: str = typer.Option(None, "--task", help="Held-out task of the deployment runs (default: a synthetic task "
                             "at a difficulty and data seed the policy never trained on)."),
    steps: int = typer.Option(150, "--steps", help="Optimizer steps of each deployment run."),
    every: int = typer.Option(15, "--every", help="Optimizer steps between rank decisions."),
    controllers: str = typer.Option("learned,static-fit,autofreeze,fixed", "--controllers",
                                    help="Comma-separated controllers to compare ('learned' = the policy just trained, "
                                    "'learned:default' = the shipped one)."),
    budget_frac: float = typer.Option(0.6, "--budget-frac", help="Budget after the step down, as a fraction of the "
                                      "reference memory (the run at rank 8 with every group training)."),
    seed: int = typer.Option(0, "--seed", help="Seed of training and of the deployment runs."),
    out: str = typer.Option("runs/demo", "--out", help="Parent of the demo's run directory (<out>/demo_<n>)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """The main job: learn a rank policy, fine-tune with it under a budget that drops, next to the baselines."""
    from rankrl.demo import HELD_OUT_TASK, DemoConfig, run_demo

    config = DemoConfig(env=env, timesteps=timesteps, n_envs=n_envs, model=model, task=task or HELD_OUT_TASK,
                        steps=steps, every=every, controllers=[c.strip() for c in controllers.split(",") if c.strip()],
                        budget_frac=budget_frac,
                        seed=seed, out=out)
    try:
        run_demo(config, progress=progress)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)


@app.command("resize-demo")
def resize_demo(
    model: str = typer.Option("default", help="'default' (MiniLM-L6), 'tiny', a model directory or hub name."),
    task: str = typer.Option("synthetic:negation", help="Task source, e.g. synthetic:negation or train.tsv."),
    steps_per_phase: int = typer.Option(40, "--steps-per-phase", help="Optimizer steps in each phase."),
    out: str = typer.Option("runs/demo", help="Parent directory of the run directory."),
    seed: int = typer.Option(0, help="Seed."),
    num_groups: int = typer.Option(4, "--num-groups", help="Layer groups (at most the model's layers)."),
) -> None:
    """Live rank reallocation in one run (8 -> 0/16 -> 4): the memory it frees, and vanilla PEFT's reload."""
    from rankrl.resize_demo import run_resize_demo

    try:
        run_resize_demo(model=model, task=task, steps_per_phase=steps_per_phase, out=out, seed=seed,
                        num_groups=num_groups)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)


@app.command()
def tasks(
    preview: str = typer.Option(None, help="Show examples of this synthetic task."),
    k: int = typer.Option(5, "-k", help="Number of examples to preview."),
    difficulty: float = typer.Option(0.5, help="Difficulty in [0, 1] for the preview."),
    seed: int = typer.Option(0, help="Seed for the preview."),
) -> None:
    """List the built-in synthetic tasks, or preview one."""
    from rich.console import Console
    from rich.table import Table

    from rankrl.data import get_task, list_tasks
    from rankrl.data import preview as preview_task

    console = Console()
    try:
        if preview:
            spec = get_task(preview)
            table = Table(title=f"synthetic:{spec.name} (difficulty {difficulty})")
            columns = ["text", "text_pair", "label"] if spec.is_pair else ["text", "label"]
            for column in columns:
                table.add_column(column)
            for row in preview_task(preview, k=k, seed=seed, difficulty=difficulty):
                table.add_row(*[str(spec.label_names[row[c]] if c == "label" else row[c]) for c in columns])
            console.print(table)
            return
        table = Table(title="Built-in synthetic tasks (use as --task synthetic:NAME[?difficulty=0.7])")
        for column in ("name", "classes", "pair", "what the model must do"):
            table.add_column(column)
        for spec in list_tasks():
            table.add_row(spec.name, ", ".join(spec.label_names), "yes" if spec.is_pair else "", spec.description)
        console.print(table)
    except ValueError as err:
        _fail(err)


@app.command()
def train(
    env: str = typer.Option("default", "--env", help="Environment preset name or YAML path (see `rankrl presets`)."),
    agent: str = typer.Option("ppo", "--agent", help="Agent preset name or YAML path."),
    timesteps: int = typer.Option(None, "--timesteps", help="Total environment steps (rank decisions); default "
                                  "20000, or a resumed run's own target."),
    n_envs: int = typer.Option(1, "--n-envs", help="Parallel environments (subprocesses, 1 torch thread each)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the policy and environments."),
    out: str = typer.Option("runs", "--out", help="Root of run directories: <out>/<env>/<agent>_<seed>_<n>/."),
    resume: str = typer.Option(None, "--resume", help="Continue this run directory from its last checkpoint."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    init_policy: str = typer.Option(None, "--init-policy", help="Warm start from this policy (run directory or "
                                    "policy.json; same observation layout and actions, e.g. a cheaper preset's)."),
    backend: str = typer.Option("subprocess", "--backend", help="Environment workers: 'subprocess' (this "
                                "machine) or 'ray' (Ray actors; needs the rankrl[ray] extra). Same seeds, "
                                "same policy."),
    address: str = typer.Option(None, "--address", help="With --backend ray: a cluster's head ('auto', "
                                "HOST:PORT or ray://HOST:PORT); default a local Ray."),
    # Behaviour cloning (docs/imitation.md).
    teacher: str = typer.Option(None, "--teacher", help="Clone this rule controller before PPO starts: "
                                "autofreeze | greedy-memory | static-fit | importance | fixed[:R] | ... (options as "
                                "NAME:key=value). --timesteps 0 clones only."),
    bc_episodes: int = typer.Option(None, "--bc-episodes", help="Teacher episodes to clone (default 32)."),
    bc_epochs: int = typer.Option(None, "--bc-epochs", help="Behaviour-cloning passes over them (default 100)."),
    bc_data: str = typer.Option(None, "--bc-data", help="Imitation dataset FILE(.npz + .json): read when it exists "
                                "(same observation layout required), else the teacher's episodes are written there."),
    # Reliability options.
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help=f"{CHECKPOINT_HELP} (environment steps; "
                                         "default: the agent preset's checkpoint_freq)."),
    trust_policy: bool = typer.Option(False, "--trust-policy", help=TRUST_HELP),
) -> None:
    """Train a rank-allocation policy with stable-baselines3 (optionally cloning a rule controller first)."""
    from rankrl.train import train_policy

    try:
        run_dir = train_policy(env=env, agent=agent, timesteps=timesteps, n_envs=n_envs, seed=seed, out=out,
                               resume=resume, progress=progress, init_policy=init_policy,
                               checkpoint_every=checkpoint_every, trust_policy=trust_policy, backend=backend,
                               address=address, teacher=teacher, bc_episodes=bc_episodes, bc_epochs=bc_epochs,
                               bc_data=bc_data,
                               say=lambda text: typer.secho(text, fg=typer.colors.YELLOW, err=True))
    except (ValueError, OSError) as err:
        _fail(err)
    typer.echo(f"policy: {run_dir / 'policy.json'} (+ policy.safetensors; SB3 model: {run_dir / 'policy.zip'})")
    curve = run_dir / "learning_curve.png"
    typer.echo(f"{f'learning curve: {curve}; ' if curve.exists() else ''}TensorBoard: tensorboard --logdir "
               f"{run_dir / 'tb'}")


@app.command()
def presets() -> None:
    """List the shipped environment and agent presets."""
    from rich.console import Console
    from rich.table import Table

    from rankrl.env import load_env_config
    from rankrl.presets import list_presets

    table = Table(title="Environment presets: --env NAME, or gymnasium.make('rankrl/NAME-v1')")
    for column in ("name", "model", "groups", "K", "episode", "description"):
        table.add_column(column)
    for name in list_presets("envs"):
        config = load_env_config(name)
        model = config.model + (f" ({config.num_hidden_layers} layers)" if config.num_hidden_layers else "")
        table.add_row(name, model, str(config.num_action_groups), str(config.steps_per_action),
                      str(config.episode_length), config.description)
    console = Console()
    console.print(table)
    console.print("Agent presets (--agent NAME): " + ", ".join(list_presets("agents")))


@app.command()
def finetune(
    model: str = typer.Option("default", "--model", help="'default' (MiniLM-L6), 'tiny', a model directory or hub name."),
    data: str = typer.Option(None, "--data", help="Train data: a .tsv/.csv/.jsonl file, a hub id or synthetic:NAME "
                             "(required unless --resume)."),
    eval_data: str = typer.Option(None, "--eval-data", help="Eval data (default: held out from --data)."),
    text_column: str = typer.Option(None, "--text-column", help="Text column (default: auto-detected)."),
    data_format: str = typer.Option(None, "--data-format", help="csv, tsv, json or trec for files whose extension "
                                    "does not say (TREC files are recognised by their lines)."),
    label_column: str = typer.Option(None, "--label-column", help="Label column (default: auto-detected)."),
    controller: str = typer.Option("fixed", "--controller", help="learned:PATH | fixed[:R] | layerwise:R,R,.. | "
                                   "importance | complexity | variance | greedy-memory | static-fit | autofreeze "
                                   "(options as NAME:key=value)."),
    policy: str = typer.Option(None, "--policy", help="Policy for --controller learned (run dir or policy.json)."),
    budget_mb: float = typer.Option(None, "--budget-mb", help="Memory budget in MiB (the hard wall); none by default."),
    budget_frac: float = typer.Option(None, "--budget-frac", help="A wall at this fraction of the reference memory: "
                                      "the run at --rank with every group training (default: a learned policy's "
                                      "training wall, else none)."),
    budget_trace: str = typer.Option(None, "--budget-trace", help="A moving wall: a CSV file with a header "
                                     "step,budget_mb or step,budget_frac and one row per change from step 0."),
    budget: str = typer.Option(None, "--budget", help="'live': follow the GPU's free memory (NVML) minus "
                               "--budget-margin-mb, read at each decision (CUDA only)."),
    budget_margin_mb: float = typer.Option(512.0, "--budget-margin-mb", help="Memory kept free by --budget live."),
    memory_scope: str = typer.Option(None, "--memory-scope", help="'total' (with the frozen base) or 'adapter' "
                                     "(default: a learned policy's own scope, else total)."),
    rslora: bool = typer.Option(False, "--rslora/--no-rslora", help="rsLoRA scaling alpha/sqrt(r) instead of PEFT's "
                                "default alpha/r."),
    steps: int = typer.Option(300, "--steps", help="Optimizer steps."),
    every: int = typer.Option(25, "--every", help="Optimizer steps between controller decisions."),
    eval_every: int = typer.Option(None, "--eval-every", help="Evaluate every N steps (default: --every; 0: never)."),
    eval_size: int = typer.Option(256, "--eval-size", help="Rows of the fixed evaluation subset."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate."),
    batch_size: int = typer.Option(16, "--batch-size", help="Examples per optimizer step."),
    max_length: int = typer.Option(64, "--max-length", help="Tokens per example."),
    rank: int = typer.Option(8, "--rank", help="Initial LoRA rank of every module."),
    r_max: int = typer.Option(None, "--r-max", help="Largest group rank (default: the policy's, else 2 x --rank)."),
    rank_step: int = typer.Option(None, "--rank-step", help="Rank granularity (default: the policy's, else r_max/8)."),
    num_groups: int = typer.Option(4, "--num-groups", help="Layer groups G (a learned policy fixes G)."),
    num_hidden_layers: int = typer.Option(None, "--num-hidden-layers", help="Keep only the first N layers."),
    seed: int = typer.Option(0, "--seed", help="Seed of adapters, head and data order."),
    out: str = typer.Option(None, "--out", help="Run directory (must not exist or be empty; required unless --resume)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    # Reliability options.
    resume: str = typer.Option(None, "--resume", help="Continue this interrupted run directory from its newest good "
                               "checkpoint (its own settings; other flags are not needed)."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help=f"{CHECKPOINT_HELP} (optimizer steps; "
                                         "default --every; 0: none)."),
    encoding: str = typer.Option(None, "--encoding", help=ENCODING_HELP),
    drop_invalid: bool = typer.Option(False, "--drop-invalid", help=DROP_INVALID_HELP),
    trust_policy: bool = typer.Option(False, "--trust-policy", help=TRUST_HELP),
) -> None:
    """Fine-tune with LoRA while a controller spends the rank; writes metrics, decisions, TensorBoard, adapter."""
    from rankrl.deploy.finetune import DivergedRunError, FinetuneConfig, resume_finetune, run_finetune

    if resume is not None:
        try:
            resume_finetune(resume, progress=progress, trust_policy=trust_policy)
        except DivergedRunError as err:
            _diverged(err)
        except (ValueError, OSError) as err:
            _fail(err)
        return
    missing = [flag for flag, value in (("--data", data), ("--out", out)) if value is None]
    if missing:
        _fail(ValueError(f"{' and '.join(missing)} required (or --resume DIR to continue a run)."))
    config = FinetuneConfig(
        model=model, data=data, eval_data=eval_data, data_format=data_format, text_column=text_column,
        label_column=label_column,
        controller=controller, policy=policy, budget_mb=budget_mb, budget_frac=budget_frac, budget_trace=budget_trace,
        budget=budget, budget_margin_mb=budget_margin_mb,
        memory_scope=memory_scope, use_rslora=rslora, steps=steps,
        every=every, eval_every=eval_every, eval_size=eval_size, lr=lr, batch_size=batch_size,
        max_length=max_length, rank=rank, r_max=r_max, rank_step=rank_step, num_groups=num_groups,
        num_hidden_layers=num_hidden_layers, seed=seed, out=out, checkpoint_every=checkpoint_every,
        encoding=encoding, drop_invalid=drop_invalid, trust_policy=trust_policy)
    try:
        run_finetune(config, progress=progress)
    except DivergedRunError as err:
        _diverged(err)
    except (ValueError, OSError) as err:
        _fail(err)


def _diverged(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(DIVERGED_EXIT)


@app.command()
def bench(
    model: str = typer.Option("default", "--model", help="'default' (MiniLM-L6), 'tiny', a model directory or hub name."),
    tasks: str = typer.Option(..., "--tasks", help="Comma-separated tasks, each [NAME=]TRAIN[:EVAL]: synthetic:NAME[?..], "
                              "a .tsv/.csv/.jsonl file (TRAIN:EVAL adds an eval file) or a hub dataset id."),
    controllers: str = typer.Option("fixed,layerwise,importance,complexity,variance,adalora", "--controllers",
                                    help="Comma-separated: fixed[:R] | layerwise[:R,R,..] | importance | complexity | "
                                    "variance | greedy-memory | static-fit | autofreeze | learned:PATH | "
                                    "adalora[:key=value,..] (PEFT AdaLoRA) | oracle-static (a grid of static "
                                    "allocations that fit each budget)."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per arm (0..N-1)."),
    budget_mb: str = typer.Option(None, "--budget-mb", help="Memory budget(s) in MiB for the adaptive controllers, "
                                  "comma-separated (one arm per budget); none by default."),
    budget_frac: str = typer.Option(None, "--budget-frac", help="Budget(s) as fractions of the reference memory "
                                    "(the run at --rank with every group training), e.g. 0.4,0.6,0.8,1.0."),
    budget_trace: str = typer.Option(None, "--budget-trace", help="A moving budget for one more arm per controller: "
                                     "a CSV file step,budget_mb or step,budget_frac."),
    fixed_ranks: str = typer.Option("2,4,8,16", "--fixed-ranks", help="Ranks of a bare 'fixed' (the fixed-rank front)."),
    fixed_lrs: str = typer.Option(None, "--fixed-lrs", help="Learning rates of the fixed-rank runs, e.g. 5e-4,1e-3,2e-3 "
                                  "(default: --lr only)."),
    text_column: str = typer.Option(None, "--text-column", help="Text column of file / hub tasks (default: auto)."),
    label_column: str = typer.Option(None, "--label-column", help="Label column of file / hub tasks (default: auto)."),
    memory_scope: str = typer.Option("total", "--memory-scope", help="'total' or 'adapter': scope of budgets and comparisons."),
    rslora: bool = typer.Option(False, "--rslora/--no-rslora", help="rsLoRA scaling alpha/sqrt(r) for every LoRA run "
                                "(learned policies included; AdaLoRA keeps its own)."),
    steps: int = typer.Option(300, "--steps", help="Optimizer steps per run."),
    every: int = typer.Option(25, "--every", help="Steps between controller decisions (and AdaLoRA's deltaT)."),
    eval_every: int = typer.Option(None, "--eval-every", help="Evaluate every N steps (default: --every; 0: never)."),
    eval_size: int = typer.Option(256, "--eval-size", help="Rows of the fixed evaluation subset."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate of every run (fixed runs: see --fixed-lrs)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Examples per optimizer step."),
    max_length: int = typer.Option(64, "--max-length", help="Tokens per example."),
    rank: int = typer.Option(8, "--rank", help="Starting rank of the adaptive controllers; AdaLoRA's target_r."),
    r_max: int = typer.Option(None, "--r-max", help="Largest group rank of the adaptive controllers (default 2 x --rank)."),
    rank_step: int = typer.Option(None, "--rank-step", help="Rank granularity (default r_max/8)."),
    num_groups: int = typer.Option(4, "--num-groups", help="Layer groups G (a learned policy fixes G)."),
    num_hidden_layers: int = typer.Option(None, "--num-hidden-layers", help="Keep only the first N layers."),
    out: str = typer.Option(..., "--out", help="Benchmark directory (must not exist or be empty, unless --resume)."),
    resume: bool = typer.Option(False, "--resume", help="Continue --out: skip finished runs (same settings required)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    backend: str = typer.Option("local", "--backend", help="'local' (one run after another) or 'ray' (every "
                                "run a Ray task; needs the rankrl[ray] extra and, on a cluster, --out on a "
                                "shared filesystem)."),
    address: str = typer.Option(None, "--address", help="With --backend ray: a cluster's head ('auto', "
                                "HOST:PORT or ray://HOST:PORT); default a local Ray."),
    # Reliability options.
    encoding: str = typer.Option(None, "--encoding", help=ENCODING_HELP),
    drop_invalid: bool = typer.Option(False, "--drop-invalid", help=DROP_INVALID_HELP),
    trust_policy: bool = typer.Option(False, "--trust-policy", help=TRUST_HELP),
) -> None:
    """Benchmark rank controllers (and PEFT AdaLoRA) against the fixed-rank front: results.csv, report.md, pareto.png."""
    from rankrl.bench import BenchConfig, run_bench
    from rankrl.bench.config import parse_numbers, split_list

    try:
        config = BenchConfig(
            model=model, tasks=split_list(tasks), controllers=[controllers], seeds=seeds,
            budget_mb=parse_numbers(budget_mb, "--budget-mb"), budget_frac=parse_numbers(budget_frac, "--budget-frac"),
            budget_trace=budget_trace, fixed_ranks=parse_numbers(fixed_ranks, "--fixed-ranks", integer=True),
            fixed_lrs=parse_numbers(fixed_lrs, "--fixed-lrs"), text_column=text_column, label_column=label_column,
            memory_scope=memory_scope, use_rslora=rslora, steps=steps, every=every, eval_every=eval_every, eval_size=eval_size, lr=lr,
            batch_size=batch_size, max_length=max_length, rank=rank, r_max=r_max, rank_step=rank_step,
            num_groups=num_groups, num_hidden_layers=num_hidden_layers, out=out, resume=resume,
            encoding=encoding, drop_invalid=drop_invalid, trust_policy=trust_policy)
        run_bench(config, progress=progress, backend=backend, address=address)
    except (ValueError, OSError) as err:
        _fail(err)
    except interrupt.Interrupted as err:
        raise interrupt.Interrupted(f"{err.message} Continue with: {_continue_command()}", err.signum) from None


@app.command()
def explain(
    run_dir: str = typer.Argument(..., help="A run directory with decisions.jsonl (finetune, or a Trainer output_dir)."),
    out: str = typer.Option(None, "--out", help="PNG path (default: RUN_DIR/explain.png)."),
    policy: str = typer.Option(None, "--policy", help="Policy for the saliency panel (default: the run's own)."),
    top_k: int = typer.Option(8, "--top-k", help="Features shown in the saliency panel."),
    trust_policy: bool = typer.Option(False, "--trust-policy", help=TRUST_HELP),
) -> None:
    """Draw a run's ranks, loss, accuracy, memory and (learned) policy saliency; print a summary."""
    from rankrl.deploy.explain import explain_run

    try:
        result = explain_run(run_dir, out=out, policy=policy, top_k=top_k, trust_policy=trust_policy)
    except (ValueError, OSError) as err:
        _fail(err)
    typer.echo(result.summary)


policy_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Policy files: convert a trusted SB3 zip "
                         "to data (policy.json + policy.safetensors).")
app.add_typer(policy_app, name="policy")


@policy_app.command("convert")
def policy_convert(
    source: str = typer.Argument(..., help="An SB3 PPO/A2C policy.zip (or its run directory) you trust."),
    destination: str = typer.Argument(..., help="Directory for policy.json + policy.safetensors."),
    trust_policy: bool = typer.Option(False, "--trust-policy", help="Required: loading the zip unpickles it, "
                                      "which can run code it carries."),
) -> None:
    """Convert a trusted stable-baselines3 zip into a policy that loads as data (no code can run)."""
    from rankrl.policy import convert_policy

    try:
        path = convert_policy(source, destination, trust_policy=trust_policy)
    except (ValueError, OSError) as err:
        _fail(err)
    typer.echo(f"policy: {path} (+ {path.with_suffix('.safetensors').name}); use it as --controller learned:"
               f"{path.parent}")


def main() -> None:
    """Entry point of the ``rankrl`` script: Ctrl-C / SIGTERM stop the long commands cleanly (rankrl.interrupt)."""
    interrupt.install()
    try:
        app()
    except interrupt.Interrupted as err:
        detail = err.message or "nothing was overwritten; finished runs and checkpoints are on disk."
        typer.secho(f"interrupted: {detail}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
