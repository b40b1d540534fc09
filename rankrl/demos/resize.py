"""The resize demo: fine-tune the embedded MiniLM and reallocate rank live, showing the memory it frees.

Phases, each a few dozen optimizer steps on one synthetic task, on one model, without restarting:

1. every layer group at rank 8 (plain LoRA);
2. bottom half of the groups at rank 0 (adapters removed), top half at rank 16;
3. every group shrunk to rank 4 (best low-rank approximation of what was learned).

After each phase it prints measured memory and held-out accuracy; at the end it saves a standard PEFT
adapter and checks that vanilla ``PeftModel.from_pretrained`` reproduces the logits.
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from rankrl.memory import MB
from rankrl.models import load_tokenizer
from rankrl.runs import new_run_dir, write_config
from rankrl.session import FineTuneSession, SessionConfig


def run_resize_demo(
    model: str = "default",
    task: str = "synthetic:negation",
    steps_per_phase: int = 40,
    out: str = "runs/demo",
    seed: int = 0,
    num_groups: int = 4,
    console: Console | None = None,
) -> Path:
    """Run the three-phase live-resizing demo and return its run directory."""
    console = console or Console()
    config = SessionConfig(model=model, task=task, rank=8, num_groups=num_groups, lr=1e-3, max_length=48,
                           eval_size=256, seed=seed, total_steps=3 * steps_per_phase)
    load_tokenizer(model)  # an unknown model fails before a run directory exists
    run_dir = new_run_dir(out, f"resize_{Path(model).name}_{task.replace(':', '-')}")
    write_config(run_dir, {"command": "demo", "session": config.to_dict(), "steps_per_phase": steps_per_phase})
    console.print(f"[bold]rankrl resize demo[/] model={model} task={task} -> {run_dir}")
    session = FineTuneSession(config)
    console.print(f"  {session.task.summary()}")
    half = num_groups // 2
    phases = [("all r=8", [8] * num_groups),
              ("bottom 0, top 16", [0] * half + [16] * (num_groups - half)),
              ("all r=4", [4] * num_groups)]
    table = Table(title="Live rank reallocation (one run, no restart)")
    for column in ("phase", "ranks", "trainable", "activ. MiB", "adapter MiB", "loss", "acc"):
        table.add_column(column, justify="right" if column != "phase" else "left")
    probe = session.train_batch(0)  # one fixed batch, so activation figures compare across phases
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("fine-tuning", total=len(phases) * steps_per_phase)
        for label, ranks in phases:
            session.set_group_ranks(ranks)
            losses = []
            for _ in range(steps_per_phase):
                losses += session.train(1).losses
                progress.advance(bar)
            memory = session.rl.memory(optimizer=session.optimizer, batch=probe)
            metrics = session.evaluate()
            table.add_row(label, str(session.rl.group_ranks), f"{memory.trainable_count:,}",
                          f"{memory.activations / MB:.1f}", f"{memory.adapter_total / MB:.1f}",
                          f"{sum(losses[-10:]) / len(losses[-10:]):.3f}", f"{metrics.accuracy:.3f}")
    console.print(table)
    adapter_dir = session.rl.save_pretrained(run_dir / "adapter")
    diff = _vanilla_peft_diff(session, adapter_dir)
    console.print(f"  adapter: {adapter_dir} (rank_pattern in adapter_config.json)")
    console.print(f"  vanilla PeftModel.from_pretrained reproduces the logits: max |diff| = {diff:.2e}")
    return run_dir


def _vanilla_peft_diff(session: FineTuneSession, adapter_dir: Path) -> float:
    import copy
    import warnings

    from peft import PeftModel

    base = copy.deepcopy(session.base_model(session.task.num_labels).model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecation chatter in PEFT
        loaded = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    batch = session.train_batch(0)
    batch.pop("labels")
    session.rl.model.eval()
    with torch.no_grad():
        return (loaded(**batch).logits - session.rl.model(**batch).logits).abs().max().item()
