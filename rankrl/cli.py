"""The ``rankrl`` command line. Each command is a thin shell over a library function of the same name."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from rankrl import interrupt
from rankrl.bench.config import BenchConfig
from rankrl.cli_options import build_config, options_from
from rankrl.demos.main import DemoConfig
from rankrl.deploy.finetune import FinetuneConfig
from rankrl.settings import help_of

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Learn how to spend LoRA rank.",
                  pretty_exceptions_enable=False)


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


DIVERGED_EXIT = 3
"""Exit code of a run whose loss became non-finite (no adapter, not a result)."""

RUN = "Run"
"""Help panel of the options that say how a command runs (rankrl.settings.PANELS)."""
TRUST_HELP = help_of(FinetuneConfig, "trust_policy")["help"]
ADDRESS_HELP = ("With --backend ray: a cluster's head ('auto', HOST:PORT or ray://HOST:PORT); default a local "
                "Ray.")


def _continue_command(flag: str = "--resume") -> str:
    """The command line that was run, with ``flag`` added: what continues an interrupted benchmark."""
    import shlex

    args = sys.argv[1:]
    return shlex.join(["rankrl", *args] + ([] if flag in args else [flag]))


@app.command()
@options_from(DemoConfig)
def demo(
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars.", rich_help_panel=RUN),
    **options: Any,
) -> None:
    """The main job: learn a rank policy, fine-tune with it under a budget that drops, next to the baselines."""
    from rankrl.demos.main import run_demo

    try:
        run_demo(build_config(DemoConfig, options), progress=progress)
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
    from rankrl.demos.resize import run_resize_demo

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
                                "machine) or 'ray' (Ray actors; needs the rankrl\\[ray] extra). Same seeds, "
                                "same policy."),
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP),
    # Behaviour cloning (docs/imitation.md).
    teacher: str = typer.Option(None, "--teacher", help="Clone this rule controller before PPO starts: "
                                "autofreeze | greedy-memory | static-fit | importance | fixed[:R] | ... (options as "
                                "NAME:key=value). --timesteps 0 clones only."),
    bc_episodes: int = typer.Option(None, "--bc-episodes", help="Teacher episodes to clone (default 32)."),
    bc_epochs: int = typer.Option(None, "--bc-epochs", help="Behaviour-cloning passes over them (default 100)."),
    bc_data: str = typer.Option(None, "--bc-data", help="Imitation dataset FILE(.npz + .json): read when it exists "
                                "(same observation layout required), else the teacher's episodes are written there."),
    dagger_rounds: int = typer.Option(None, "--dagger-rounds", help="With --teacher: DAgger rounds after cloning "
                                      "(default 0): the clone drives new episodes, the teacher labels every state it "
                                      "reaches, and the clone is fitted again on all rows."),
    dagger_episodes: int = typer.Option(None, "--dagger-episodes", help="Episodes the clone drives per DAgger round "
                                        "(default 16)."),
    replay: bool = typer.Option(True, "--replay/--no-replay", help="With --teacher: PPO replays the teacher's "
                                "episodes (same task, seed, budget and trace) instead of drawing new ones."),
    relative_reward: bool = typer.Option(True, "--relative-reward/--absolute-reward", help="With --replay: reward "
                                         "= the environment's reward minus the teacher's at the same decision."),
    curriculum: float = typer.Option(None, "--curriculum", help="With --replay: fraction of --timesteps over which "
                                     "the draw widens from the easiest quarter of the teacher's episodes (lower "
                                     "budget and moving traces are harder) to all of them (default 0.5; 0: off)."),
    anchor: float = typer.Option(None, "--anchor", help="With --teacher: weight of the pull towards the teacher's "
                                 "decisions after each rollout, at step 0 (default 0.2; 0: off; docs/imitation.md)."),
    anchor_half_life: float = typer.Option(None, "--anchor-half-life", help="With --teacher: fraction of "
                                           "--timesteps over which the anchor's weight halves (default 0.5)."),
    eval_episodes: int = typer.Option(None, "--eval-episodes", help="Held-out episodes per evaluation (default: "
                                      "the agent preset's eval_episodes; at most the preset's eval_seeds)."),
    eval_points: int = typer.Option(8, "--eval-points", help="Evaluations during training, at least (plus one "
                                    "before the first update), each paired with fixed rank, static-fit and the "
                                    "teacher on the same held-out episodes."),
    # Reliability options.
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints that --resume "
                                         "continues from (environment steps; "
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
                               bc_data=bc_data, replay=replay, relative_reward=relative_reward,
                               curriculum=curriculum, eval_episodes=eval_episodes, eval_points=eval_points,
                               anchor=anchor, anchor_half_life=anchor_half_life, dagger_rounds=dagger_rounds,
                               dagger_episodes=dagger_episodes,
                               say=lambda text: typer.secho(text, fg=typer.colors.YELLOW, err=True))
    except (ValueError, OSError) as err:
        _fail(err)
    typer.echo(f"policy: {run_dir / 'policy.json'} (+ policy.safetensors; SB3 model: {run_dir / 'policy.zip'})")
    curve, table = run_dir / "learning_curve.png", run_dir / "evaluations.md"
    if table.exists():
        typer.echo(f"held-out evaluations, paired with the rules: {table}")
    typer.echo(f"{f'learning curve: {curve}; ' if curve.exists() else ''}TensorBoard: tensorboard --logdir "
               f"{run_dir / 'tb'}")


@app.command()
def presets() -> None:
    """List the shipped environment and agent presets."""
    from rich.console import Console
    from rich.table import Table

    from rankrl.env import load_env_config
    from rankrl.env.registration import ENV_VERSION
    from rankrl.presets import list_presets

    table = Table(title=f"Environment presets: --env NAME, or gymnasium.make('rankrl/NAME-v{ENV_VERSION}')")
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
@options_from(FinetuneConfig)
def finetune(
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.", rich_help_panel=RUN),
    resume: str = typer.Option(None, "--resume", help="Continue this interrupted run directory from its newest good "
                               "checkpoint (its own settings; other flags are not needed).", rich_help_panel=RUN),
    **options: Any,
) -> None:
    """Fine-tune with LoRA while a controller spends the rank; writes metrics, decisions, TensorBoard, adapter."""
    from rankrl.deploy.finetune import DivergedRunError, resume_finetune, run_finetune

    if resume is not None:
        try:
            resume_finetune(resume, progress=progress, trust_policy=options["trust_policy"])
        except DivergedRunError as err:
            _diverged(err)
        except (ValueError, OSError) as err:
            _fail(err)
        return
    missing = [flag for flag, value in (("--data", options["data"]), ("--out", options["out"])) if value is None]
    if missing:
        _fail(ValueError(f"{' and '.join(missing)} required (or --resume DIR to continue a run)."))
    config = build_config(FinetuneConfig, options)
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
@options_from(BenchConfig)
def bench(
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar.", rich_help_panel=RUN),
    backend: str = typer.Option("local", "--backend", help="'local' (one run after another) or 'ray' (every run a "
                                "Ray task; needs the rankrl\\[ray] extra and, on a cluster, --out on a shared "
                                "filesystem).", rich_help_panel=RUN),
    address: str = typer.Option(None, "--address", help=ADDRESS_HELP, rich_help_panel=RUN),
    **options: Any,
) -> None:
    """Benchmark rank controllers (and PEFT AdaLoRA) against the fixed-rank front: results.csv, report.md,
    pareto.png."""
    from rankrl.bench import run_bench

    try:
        run_bench(build_config(BenchConfig, options), progress=progress, backend=backend, address=address)
    except (ValueError, OSError) as err:
        _fail(err)
    except interrupt.Interrupted as err:
        raise interrupt.Interrupted(f"{err.message} Continue with: {_continue_command()}", err.signum) from None


@app.command()
def explain(
    run_dir: str = typer.Argument(..., help="A run directory with decisions.jsonl (finetune, or a Trainer "
                                  "output_dir)."),
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
