"""A steppable LoRA fine-tuning run: model + data + optimizer + schedule + :class:`RankedLoRA`.

The RL environment and the deployed controllers both drive one of these. It exists because neither the HF
``Trainer`` nor a plain loop can be advanced K steps at a time, inspected, resized, checkpointed in memory
and reset to fresh adapters hundreds of times per process.

Resetting is cheap: the frozen base model is loaded once (per number of labels) and each reset takes a
copy of it, attaches fresh adapters and a fresh optimizer. Data order is a pure function of
``(seed, step)``, so a checkpoint needs no iterator state and a restored run continues bit for bit.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import get_scheduler

from rankrl.data import TaskData, load_task_data, tokenize_task
from rankrl.lora import RankedLoRA
from rankrl.lora.groups import layer_index
from rankrl.memory import MemoryReport
from rankrl.models import LoadedModel, load_model
from rankrl.prefix_cache import PrefixCache, base_prefix


@dataclass
class SessionConfig:
    """Everything that defines a fine-tuning run (saved with every run directory)."""

    model: str = field(default="default",
                       metadata={"help": "'default' (MiniLM-L6), 'tiny', a directory or a hub name."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Keep only the first N layers."})
    task: str = field(default="synthetic:keyword", metadata={"help": "Train data source (see rankrl.data)."})
    eval_task: str | None = field(default=None, metadata={"help": "Eval data source; None uses the task's own."})
    max_length: int = field(default=64, metadata={"help": "Tokens per example (truncation)."})
    batch_size: int = field(default=16, metadata={"help": "Examples per optimizer step."})
    eval_size: int = field(default=256, metadata={"help": "Size of the fixed held-out evaluation subset."})
    train_size: int | None = field(default=None, metadata={"help": "Cap on training examples (None: all)."})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    scheduler: str = field(default="constant",
                           metadata={"help": "transformers scheduler name (constant, linear, cosine)."})
    warmup_steps: int = field(default=0, metadata={"help": "Scheduler warm-up steps."})
    total_steps: int = field(default=1000, metadata={"help": "Scheduler horizon."})
    rank: int = field(default=8, metadata={"help": "Initial LoRA rank of every module."})
    num_groups: int = field(default=4, metadata={"help": "Layer groups G."})
    split_by_kind: bool = field(default=False, metadata={"help": "Split groups into attention and MLP."})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    use_rslora: bool = field(default=False, metadata={"help": "rsLoRA scaling alpha/sqrt(r)."})
    prefix_cache: bool = field(default=False, metadata={
        "help": "Reuse the hidden states of bottom layers that hold no adapter (rankrl.prefix_cache)."})
    seed: int = field(default=0, metadata={"help": "Seed of adapters, head, data order and dropout."})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """Outcome of :meth:`FineTuneSession.train`: the per-step losses and whether the run diverged."""

    losses: list[float]
    diverged: bool = False

    @property
    def mean_loss(self) -> float:
        return float(np.mean(self.losses)) if self.losses else float("nan")


@dataclass
class EvalResult:
    """Accuracy, macro-F1 and mean loss on the fixed held-out subset."""

    accuracy: float
    macro_f1: float
    loss: float

    def to_dict(self) -> dict:
        return asdict(self)


class DivergedError(RuntimeError):
    """Training produced a non-finite loss."""


def macro_f1(predictions: torch.Tensor, labels: torch.Tensor, num_labels: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    index = labels * num_labels + predictions
    confusion = torch.bincount(index, minlength=num_labels * num_labels).reshape(num_labels, num_labels).double()
    true_positive = confusion.diag()
    support, predicted = confusion.sum(1), confusion.sum(0)
    present = (support + predicted) > 0
    f1 = 2 * true_positive / (support + predicted).clamp_min(1)
    return float(f1[present].mean()) if present.any() else 0.0


class FineTuneSession:
    """A LoRA fine-tuning run that can be stepped, evaluated, resized, checkpointed and reset.

    Args:
        config: The run's definition.
        task: A prepared :class:`TaskData`; default: load ``config.task``.

    Attributes:
        rl: The :class:`RankedLoRA` being trained (replaced by :meth:`reset`).
        optimizer: AdamW over the trainable parameters.
        step: Optimizer steps taken since the last reset.
        after_backward: Callables ``f(session)`` run between backward and the optimizer step, when
            gradients exist (importance signals read them there).
        prefix_observers: Forward hooks' owners that must see the layers the prefix cache skips: each has
            ``due(names)`` (a pass now would sample one of these modules: run it whole) and ``skipped(names)``
            (a pass ran without them: count it), like :class:`rankrl.signals.InputVarianceTracker`.
    """

    def __init__(self, config: SessionConfig, task: TaskData | None = None) -> None:
        self.config = config
        self._bases: dict[int, LoadedModel] = {}
        self.after_backward: list = []
        self.prefix_observers: list = []
        self.rl: RankedLoRA | None = None
        # Data parallel (rankrl.deploy.distributed): this process's share of each batch and the DDP wrapper.
        self.shard: tuple[int, int] = (0, 1)
        self.train_module: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler = None
        self.step = 0
        self.prefix_cache = PrefixCache() if config.prefix_cache else None
        self._task_tokens: dict[int, tuple[TaskData, int]] = {}  # keeps each task alive while its key is used
        self.set_task(task if task is not None else self._load_task(config.task, config.eval_task, config.seed))
        self.reset(seed=config.seed)

    # ------------------------------------------------------------------ set-up
    def _load_task(self, source, eval_source, seed: int) -> TaskData:
        return load_task_data(source, eval_source, seed=seed, max_train=self.config.train_size)

    def set_task(self, task: TaskData) -> None:
        """Switch data (tokenised once, cached); takes effect at the next :meth:`reset`."""
        self.task = task
        self._task_key = self._task_tokens.setdefault(id(task), (task, len(self._task_tokens)))[1]
        self.tokenizer = self.base_model(task.num_labels).tokenizer
        self._train, self._eval = tokenize_task(task, self.tokenizer, self.config.max_length)
        eval_order = np.random.default_rng(0).permutation(len(self._eval))[: self.config.eval_size]
        self._eval_rows = self._eval.select(sorted(eval_order.tolist()))

    def base_model(self, num_labels: int) -> LoadedModel:
        """The frozen base for ``num_labels`` classes, loaded once per session (reset copies it)."""
        if num_labels not in self._bases:
            # The base is part of the model's identity, not of the run: seed 0 whatever the run's seed
            # (it matters only for the random weights of the tiny model; heads are re-drawn at every reset).
            self._bases[num_labels] = load_model(
                self.config.model, num_labels=num_labels, num_hidden_layers=self.config.num_hidden_layers, seed=0
            )
        return self._bases[num_labels]

    def reset(self, seed: int | None = None, task: TaskData | None = None) -> None:
        """Start over from the frozen base with fresh adapters, head, optimizer and schedule."""
        if task is not None:
            self.set_task(task)
        self.seed = self.config.seed if seed is None else int(seed)
        torch.manual_seed(self.seed)
        model = copy.deepcopy(self.base_model(self.task.num_labels).model)
        _reinit_head(model)
        config = self.config
        self.rl = RankedLoRA.attach(
            model, rank=config.rank, num_groups=config.num_groups, split_by_kind=config.split_by_kind,
            lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, use_rslora=config.use_rslora,
        )
        self.optimizer = torch.optim.AdamW(self.rl.trainable_parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.scheduler = get_scheduler(config.scheduler, self.optimizer, num_warmup_steps=config.warmup_steps,
                                       num_training_steps=config.total_steps)
        self.step = 0

    # ------------------------------------------------------------------ data
    def batch_indices(self, step: int) -> list[int]:
        """Train rows of optimizer step ``step``: a seeded permutation per epoch, sliced in order."""
        n, size = len(self._train), self.config.batch_size
        per_epoch = max(1, n // size)
        epoch, position = divmod(step, per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(n)
        rows = order[position * size : (position + 1) * size].tolist()
        index, count = self.shard  # a data-parallel process trains on its slice of the global batch
        return rows[index * len(rows) // count : (index + 1) * len(rows) // count] if count > 1 else rows

    def _collate(self, rows) -> dict:
        return self.tokenizer.pad(rows, return_tensors="pt")

    def train_batch(self, step: int) -> dict:
        """The padded batch of optimizer step ``step``."""
        return self._collate(self._train[self.batch_indices(step)])

    def reference_batch(self) -> dict:
        """A fixed batch: the first ``batch_size`` training rows, whatever the seed, padded to ``max_length``.

        Memory measured on it is comparable across decisions, runs, arms and seeds of one task, which the
        training batches are not: their padded length varies, and so do the activations they save. Padding to
        ``max_length`` makes it the largest batch a step can see, so the wall holds for every batch.
        """
        rows = self._train[list(range(min(self.config.batch_size, len(self._train))))]
        return self.tokenizer.pad(rows, padding="max_length", max_length=self.config.max_length, return_tensors="pt")

    # ------------------------------------------------------------------ stepping
    def train(self, steps: int, measure_every: int = 0) -> TrainResult:
        """Take ``steps`` optimizer steps. Stops early, without applying the update, on a non-finite loss.

        Args:
            steps: Optimizer steps.
            measure_every: Measure saved-activation bytes on every n-th step (0: only on the first step
                after a reset or when no measurement exists yet).
        """
        losses: list[float] = []
        model = self.train_module if self.train_module is not None else self.rl.model
        model.train()
        for _ in range(steps):
            batch = self.train_batch(self.step)
            measure = not self.rl.activations_measured or (measure_every and self.step % measure_every == 0)
            if measure:
                with self.rl.measure_activations():
                    loss = model(**batch).loss
            else:
                loss = self._forward(model, batch, self._train, self.batch_indices(self.step), "train").loss
            value = loss.item()
            if not math.isfinite(value):
                self.optimizer.zero_grad(set_to_none=True)
                return TrainResult(losses + [value], diverged=True)
            loss.backward()
            for hook in self.after_backward:
                hook(self)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(value)
            self.step += 1
        return TrainResult(losses)

    @torch.no_grad()
    def evaluate(self, batch_size: int = 64) -> EvalResult:
        """Accuracy, macro-F1 and loss on the fixed held-out subset (``config.eval_size`` rows)."""
        model = self.rl.model
        was_training = model.training
        model.eval()
        predictions, labels, loss_sum = [], [], 0.0
        for start in range(0, len(self._eval_rows), batch_size):
            rows = list(range(start, min(start + batch_size, len(self._eval_rows))))
            batch = self._collate(self._eval_rows[rows])
            out = self._forward(model, batch, self._eval_rows, rows, "eval")
            loss_sum += out.loss.item() * len(batch["labels"])
            predictions.append(out.logits.argmax(-1))
            labels.append(batch["labels"])
        model.train(was_training)
        predicted, gold = torch.cat(predictions), torch.cat(labels)
        return EvalResult(
            accuracy=float((predicted == gold).double().mean()),
            macro_f1=macro_f1(predicted, gold, self.task.num_labels),
            loss=loss_sum / len(gold),
        )

    def _forward(self, model, batch: dict, split, rows: list[int], name: str):
        """``model(**batch)``, starting above the bottom layers that hold no adapter when the cache is on.

        What a run observes does not depend on the cache: a pass in which an observer would sample a skipped
        module runs whole, the others tell the observers which modules they skipped, and filling the cache
        is not a pass anyone observes (:meth:`RankedLoRA.unobserved`).
        """
        cache, rl = self.prefix_cache, self.rl
        if cache is None or model is not rl.model or not rows:
            return model(**batch)
        root = rl.root
        k = base_prefix(rl.ranks, root, training=model.training)
        if k == 0:
            return model(**batch)
        skipped = [module for module in rl.ranks if (index := layer_index(module)) is not None and index < k]
        if any(observer.due(skipped) for observer in self.prefix_observers):
            return model(**batch)
        columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in split.column_names]

        def collate(indices: list[int]) -> dict:
            return self.tokenizer.pad(split.select(indices).select_columns(columns)[:], return_tensors="pt")

        with rl.unobserved():
            states = cache.states(root, k, (self._task_key, name), rows, len(split), collate)
        with cache.starting_at(root, k, states, batch["attention_mask"]):
            out = model(**batch)
        for observer in self.prefix_observers:
            observer.skipped(skipped)
        return out

    def set_group_ranks(self, ranks: list[int]) -> dict[str, int]:
        """Resize every group and repair the optimizer; the next step measures activations anew."""
        return self.rl.set_group_ranks(ranks, optimizer=self.optimizer)

    def memory(self) -> MemoryReport:
        """Measured memory of the last training step (activations from the last measured forward)."""
        report = self.rl.memory(optimizer=self.optimizer)
        if report.gradients == 0:  # gradients are freed by zero_grad; a step holds one per trainable parameter
            report.gradients = report.trainable_parameters
        return report

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> dict:
        """An in-memory snapshot from which :meth:`restore` resumes identically."""
        frozen = {id(p) for p in self.rl.frozen_factors()}  # not trained now, but learned before: saved too
        trainable = {name: p.detach().clone() for name, p in self.rl.model.named_parameters()
                     if p.requires_grad or id(p) in frozen}
        names = {id(p): name for name, p in self.rl.model.named_parameters() if p.requires_grad}
        state = self.optimizer.state_dict()
        param_names = [[names[id(p)] for p in group["params"]] for group in self.optimizer.param_groups]
        return {
            "ranks": self.rl.ranks,
            "frozen": sorted(self.rl.frozen),
            "weights": trainable,
            "optimizer": copy.deepcopy(state),
            "optimizer_param_names": param_names,
            "scheduler": copy.deepcopy(self.scheduler.state_dict()),
            "step": self.step,
            "seed": self.seed,
            "torch_rng": torch.get_rng_state(),
        }

    def restore(self, snapshot: dict) -> None:
        """Return to a snapshot from :meth:`checkpoint` (ranks, frozen modules, weights, optimizer, schedule, RNG,
        step)."""
        if snapshot["seed"] != self.seed:
            self.reset(seed=snapshot["seed"])
        self.rl.resize(snapshot["ranks"])
        frozen = set(snapshot.get("frozen", []))
        self.rl.thaw(sorted(self.rl.frozen - frozen))
        self.rl.freeze(sorted(frozen))
        named = dict(self.rl.model.named_parameters())
        with torch.no_grad():
            for name, value in snapshot["weights"].items():
                named[name].copy_(value)
        groups = [[named[name] for name in group] for group in snapshot["optimizer_param_names"]]
        self.optimizer = torch.optim.AdamW(
            [{"params": params} for params in groups], lr=self.config.lr, weight_decay=self.config.weight_decay
        )
        self.optimizer.load_state_dict(copy.deepcopy(snapshot["optimizer"]))
        self.scheduler = get_scheduler(self.config.scheduler, self.optimizer, num_warmup_steps=self.config.warmup_steps,
                                       num_training_steps=self.config.total_steps)
        self.scheduler.load_state_dict(copy.deepcopy(snapshot["scheduler"]))
        self.step = snapshot["step"]
        torch.set_rng_state(snapshot["torch_rng"])
        self.rl.forget_activations()

    def save(self, path: str | Path) -> Path:
        """Write :meth:`checkpoint` to a file (``torch.save``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"config": self.config.to_dict(), **self.checkpoint()}, path)
        return path

    def load(self, path: str | Path) -> None:
        """Restore a file written by :meth:`save`; refuses a checkpoint of another model or task."""
        snapshot = torch.load(Path(path), weights_only=False)
        saved = snapshot.get("config", {})
        for key in ("model", "num_hidden_layers", "task", "eval_task", "max_length", "train_size"):
            if key in saved and saved[key] != getattr(self.config, key):
                raise ValueError(
                    f"Checkpoint {path} was made with {key}={saved[key]!r} but this session has "
                    f"{key}={getattr(self.config, key)!r}; build the session from the checkpoint's config."
                )
        self.restore(snapshot)


def _reinit_head(model) -> None:
    """Re-initialise the classification head with the model's own init (seeded by the caller)."""
    for name in ("classifier", "score"):
        head = getattr(model, name, None)
        if head is None:
            continue
        for module in head.modules():
            init = getattr(model, "_init_weights", None)
            if init is not None:
                init(module)
            elif hasattr(module, "reset_parameters"):
                module.reset_parameters()
