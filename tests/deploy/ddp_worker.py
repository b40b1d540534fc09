"""A data-parallel run with a rank controller, started by ``torchrun`` from ``test_distributed.py``.

Usage: ``python ddp_worker.py MODE OUT`` with MODE ``loop`` (hand-written loop), ``trainer`` (HF Trainer) or
``mismatch`` (rank 1 asks for another schedule). Without torchrun it is the one-process reference on the
global batch. Each process writes ``OUT/rank<r>.pt`` (or ``OUT/single.pt``): its decisions, final ranks and
trainable parameters; an error is printed as ``error: ...`` with exit code 2.
"""

from __future__ import annotations

import os
import sys

import torch

torch.set_num_threads(1)

from rankrl.controllers import Decision, RankController  # noqa: E402
from rankrl.deploy import RankControl  # noqa: E402
from rankrl.deploy.distributed import DataParallelSync, init_from_env  # noqa: E402
from rankrl.lora import RankedLoRA  # noqa: E402

GLOBAL_BATCH, STEPS, EVERY = 8, 15, 3
SCHEDULE = [([4, 4], None), ([2, 6], None), ([0, 8], None), ([6, 2], None), ([6, 2], [True, False]),
            ([6, 4], [True, False])]
"""(group ranks, frozen flags) of the decisions at steps 0, 3, ..., 15: a shrink and growth, a group to rank
0, regrowth from 0, a freeze, and a resize next to the frozen group."""


class Scripted(RankController):
    """Follows :data:`SCHEDULE`, one entry per decision (rank 0 alone runs it under DDP)."""

    name = "scripted"

    def __init__(self) -> None:
        self.calls = 0

    def decide(self, ctx) -> Decision:
        ranks, frozen = SCHEDULE[self.calls % len(SCHEDULE)]
        self.calls += 1
        return Decision(list(ranks), f"schedule entry {self.calls}", frozen=frozen)


def tiny_model():
    from transformers import BertForSequenceClassification

    from rankrl.models import tiny_bert_config

    torch.manual_seed(0)
    config = tiny_bert_config(num_labels=2, num_hidden_layers=2, hidden_size=32)
    config.vocab_size, config.hidden_dropout_prob, config.attention_probs_dropout_prob = 512, 0.0, 0.0
    return BertForSequenceClassification(config)


def global_batch(step: int) -> dict:
    generator = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(5, 512, (GLOBAL_BATCH, 10), generator=generator)
    labels = torch.randint(0, 2, (GLOBAL_BATCH,), generator=generator)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def local_batch(step: int, rank: int, world: int) -> dict:
    size = GLOBAL_BATCH // world
    return {k: v[rank * size : (rank + 1) * size] for k, v in global_batch(step).items()}


def run_loop(out: str, mismatch: bool) -> None:
    distributed = init_from_env(timeout_seconds=60)
    rank, world = (
        (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    )
    rl = RankedLoRA.attach(tiny_model(), rank=4, num_groups=2, lora_dropout=0.0)
    model = torch.nn.parallel.DistributedDataParallel(rl.model) if distributed else rl.model
    optimizer = torch.optim.AdamW(rl.trainable_parameters(), lr=1e-2)
    every = EVERY + 1 if mismatch and rank == 1 else EVERY
    control = RankControl(rl, Scripted(), every=every, total_steps=STEPS, r_max=8, rank_step=2)
    sync = DataParallelSync(track=[model]).attach(control) if distributed else None
    control.setup(optimizer, local_batch(0, rank, world))  # decides at step 0 (schedule entry 1)
    decisions = [(control.last_applied.ranks, control.last_applied.frozen)]
    for step in range(1, STEPS + 1):
        loss = model(**local_batch(step, rank, world)).loss
        loss.backward()
        control.after_backward()
        optimizer.step()
        optimizer.zero_grad()
        applied = control.step(step, loss.item(), optimizer)
        if applied is not None:
            decisions.append((applied.ranks, applied.frozen))
    signals = control.reader.read()  # this process's own reading, and the one every process decides on
    extra = {"local": signals.to_dict(), "reduced": sync.reduce_signals(signals).to_dict()} if sync else {}
    save(out, rank if distributed else None, rl, decisions, sync, **extra)


def run_trainer(out: str) -> None:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from rankrl.deploy import RankRLCallback

    init_from_env(timeout_seconds=60)
    rank = torch.distributed.get_rank()
    rl = RankedLoRA.attach(tiny_model(), rank=4, num_groups=2, lora_dropout=0.0)
    rows = {k: torch.cat([global_batch(s)[k] for s in range(STEPS)]).tolist() for k in global_batch(0)}
    args = TrainingArguments(
        output_dir=os.path.join(out, "trainer"),
        per_device_train_batch_size=GLOBAL_BATCH // 2,
        max_steps=STEPS,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        ddp_backend="gloo",
        dataloader_drop_last=True,
        seed=0,
        disable_tqdm=True,
    )
    control = RankControl(rl, Scripted(), every=EVERY, r_max=8, rank_step=2)
    trainer = Trainer(
        model=rl.model,
        args=args,
        train_dataset=Dataset.from_dict(rows),
        callbacks=[RankRLCallback(control)],
    )
    sync = DataParallelSync(track=[lambda: trainer.model_wrapped]).attach(control)
    trainer.train()
    decisions = [
        ([e[f"rankrl/group{g}_rank"] for g in range(2)], None)
        for e in trainer.state.log_history
        if "rankrl/group0_rank" in e
    ]
    save(out, rank, rl, decisions, sync)


def save(out: str, rank: int | None, rl: RankedLoRA, decisions: list, sync, **extra) -> None:
    params = {n: p.detach().clone() for n, p in rl.model.named_parameters() if p.requires_grad or "lora_" in n}
    torch.save(
        {
            "decisions": decisions,
            "ranks": rl.group_ranks,
            "frozen": rl.frozen_groups,
            "params": params,
            "rebuilds": sync.rebuilds if sync is not None else 0,
            **extra,
        },
        os.path.join(out, "single.pt" if rank is None else f"rank{rank}.pt"),
    )


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    try:
        if mode == "trainer":
            run_trainer(out)
        else:
            run_loop(out, mismatch=mode == "mismatch")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
