"""``BenchConfig``: the flags of ``rankrl bench``, their checks, and the task syntax.

Tasks (``--tasks``, comma-separated) are anything ``rankrl finetune --data`` accepts, optionally named and
optionally with their own eval data::

    [NAME=]TRAIN[:EVAL]

* ``synthetic:keyword?n_train=512`` - a built-in task (it makes its own eval split; the colon after
  ``synthetic`` is part of the source, never a train/eval separator);
* ``data/train.tsv`` - a local file, eval held out from it; ``sst2=data/train.tsv:data/dev.tsv`` - a local
  train file with its eval file, named ``sst2``;
* ``stanfordnlp/sst2`` - a Hugging Face hub dataset (needs network).

``NAME`` names the task's directory (``DIR/runs/NAME/...``) and its table in ``report.md``; without one it is
derived from the source (``keyword`` for any ``synthetic:keyword...``, the file stem, the hub id's last
part); two tasks with one name are refused. Paths holding ``,`` or ``:`` cannot be given here.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from rankrl.controllers import CONTROLLERS
from rankrl.data import is_synthetic_source, parse_synthetic_source
from rankrl.deploy.finetune import FinetuneConfig

ADALORA = "adalora"
KNOWN = [*CONTROLLERS, ADALORA, "oracle-static"]
"""Controller names of ``--controllers``: rankrl's controllers and PEFT's AdaLoRA."""
DEFAULT_CONTROLLERS = ["fixed", "layerwise", "importance", "complexity", "variance", "adalora"]
ORACLE_STATIC = "oracle-static"
DEFAULT_FIXED_RANKS = [2, 4, 8, 16]
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)=(.+)$")
_ARGUMENT = re.compile(r"^(\d+|[A-Za-z_][\w-]*=.*)$")


def slug(text: str) -> str:
    """A directory-safe form of ``text`` (letters, digits, ``_.-``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "x"


def split_list(text: str | list | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; a list is stripped of blanks; ``None`` -> ``[]``."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else [str(item) for item in text]
    return [item.strip() for item in items if item.strip()]


def parse_numbers(text: str | list | None, flag: str, integer: bool = False) -> list:
    """Comma-separated numbers of a flag (``"5e-4,1e-3"``); a bad item names the flag."""
    out = []
    for item in split_list(text):
        try:
            out.append(int(item) if integer else float(item))
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise ValueError(f"{flag}: {item!r} is not {kind} (give a comma-separated list).") from None
    return out


def split_controllers(text: str | list[str]) -> list[str]:
    """Split ``--controllers`` on commas, keeping commas inside a spec's own arguments.

    ``"fixed,layerwise:0,4,8,16,importance:target_rank=2,warmup_steps=5,adalora"`` gives ``fixed``,
    ``layerwise:0,4,8,16``, ``importance:target_rank=2,warmup_steps=5`` and ``adalora``: an item that is a
    number or ``key=value`` continues the previous spec when that spec has arguments.
    """
    items = text.split(",") if isinstance(text, str) else [piece for item in text for piece in item.split(",")]
    specs: list[str] = []
    for item in (piece.strip() for piece in items):
        if not item:
            continue
        name = item.partition(":")[0].strip().lower()
        if specs and ":" in specs[-1] and name not in KNOWN and _ARGUMENT.match(item):
            specs[-1] = f"{specs[-1]},{item}"
        else:
            specs.append(item)
    return specs


@dataclass(frozen=True)
class TaskSpec:
    """One task of the benchmark: its name, train source and optional eval source."""

    name: str
    train: str
    eval: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        """``train`` or ``train (eval: dev)`` for reports."""
        return self.train if self.eval is None else f"{self.train} (eval: {self.eval})"


def parse_task(text: str) -> TaskSpec:
    """Parse ``[NAME=]TRAIN[:EVAL]`` (see the module docstring)."""
    text = text.strip()
    name = None
    match = _NAME.match(text)
    if match and not is_synthetic_source(text):
        name, text = match.group(1), match.group(2).strip()
    if is_synthetic_source(text):
        train, eval_ = text, None
    else:
        train, sep, eval_ = text.partition(":")
        train, eval_ = train.strip(), (eval_.strip() if sep else None)
        if not train or (sep and not eval_):
            raise ValueError(f"--tasks: {text!r} is not TRAIN or TRAIN:EVAL (e.g. data/train.tsv:data/dev.tsv).")
    return TaskSpec(name=slug(name) if name else default_task_name(train), train=train, eval=eval_)


def default_task_name(train: str) -> str:
    """``keyword`` (plus its options) for synthetic tasks, the file stem, or the last part of a hub id."""
    if is_synthetic_source(train):
        return slug(parse_synthetic_source(train)[0])
    stem = train.rstrip("/").rsplit("/", 1)[-1]
    return slug(stem.rsplit(".", 1)[0] if "." in stem else stem)


def parse_tasks(items: list[str]) -> list[TaskSpec]:
    """Parse every task; two tasks with one name are refused (name them ``NAME=...``)."""
    tasks = [parse_task(item) for item in items]
    seen: dict[str, TaskSpec] = {}
    for task in tasks:
        if task.name in seen:
            raise ValueError(f"--tasks: {seen[task.name].train!r} and {task.train!r} are both named "
                             f"{task.name!r}; name them, e.g. {task.name}2={task.train}.")
        seen[task.name] = task
    return tasks


@dataclass
class BenchConfig:
    """The flags of ``rankrl bench`` (saved as ``DIR/config.json``; a resume must match it).

    Attributes:
        model: Base model (``default``, ``tiny``, a directory or a hub name).
        tasks: Task specs ``[NAME=]TRAIN[:EVAL]`` (see the module docstring).
        controllers: Controller specs: ``fixed[:R]``, ``layerwise[:R,R,..]``, ``importance``, ``complexity``,
            ``variance``, ``greedy-memory``, ``learned:PATH`` (options as ``NAME:key=value``) and
            ``adalora[:key=value,..]`` (PEFT's AdaLoRA).
        seeds: Seeds per arm (0..seeds-1).
        budget_mb: Memory budgets in MiB for the adaptive controllers (one arm per budget); empty: none.
        budget_frac: Memory budgets as fractions of the reference memory (the run at ``rank`` with every group
            training, measured on the same reference batch for every arm and seed); one arm per budget.
        budget_trace: A CSV trace of a moving budget (``step,budget_mb`` or ``step,budget_frac``): one more
            arm per controller.
        fixed_ranks: Ranks of a bare ``fixed`` (the fixed-rank front).
        fixed_lrs: Learning rates of the fixed-rank runs (a small sweep); empty: ``lr`` only.
        text_column: Text column of file / hub tasks (default: auto-detected).
        label_column: Label column of file / hub tasks (default: auto-detected).
        memory_scope: ``total`` or ``adapter``: the scope of the budget and of the comparisons.
        use_rslora: rsLoRA scaling for every LoRA run, learned policies included (AdaLoRA keeps its own).
        steps: Optimizer steps per run.
        every: Optimizer steps between controller decisions (and AdaLoRA's ``deltaT``).
        eval_every: Evaluate every N steps (default: ``every``; 0: only at the start and the end).
        eval_size: Rows of the fixed evaluation subset.
        lr: AdamW learning rate of every run (fixed runs: see ``fixed_lrs``).
        batch_size: Examples per optimizer step.
        max_length: Tokens per example.
        rank: Starting rank of the adaptive controllers and AdaLoRA's ``target_r``.
        r_max: Largest group rank of the adaptive controllers (default ``2 * rank``, or a policy's own).
        rank_step: Rank granularity (default ``r_max // 8``, or a policy's own).
        num_groups: Layer groups G.
        num_hidden_layers: Keep only the first N layers of the model.
        out: The benchmark directory.
        resume: Continue ``out``: skip finished runs (the settings must be those it was started with).
    """

    model: str = "default"
    tasks: list[str] = field(default_factory=lambda: ["synthetic:keyword"])
    controllers: list[str] = field(default_factory=lambda: list(DEFAULT_CONTROLLERS))
    seeds: int = 3
    budget_mb: list[float] = field(default_factory=list)
    budget_frac: list[float] = field(default_factory=list)
    budget_trace: str | None = None
    fixed_ranks: list[int] = field(default_factory=lambda: list(DEFAULT_FIXED_RANKS))
    fixed_lrs: list[float] = field(default_factory=list)
    text_column: str | None = None
    label_column: str | None = None
    memory_scope: str = "total"
    use_rslora: bool = False
    steps: int = 300
    every: int = 25
    eval_every: int | None = None
    eval_size: int = 256
    lr: float = 1e-3
    batch_size: int = 16
    max_length: int = 64
    rank: int = 8
    r_max: int | None = None
    rank_step: int | None = None
    num_groups: int = 4
    num_hidden_layers: int | None = None
    out: str = "runs/bench"
    resume: bool = False

    def check(self) -> None:
        """Raise ``ValueError`` naming the flag of the first bad setting (nothing is read or written)."""
        if not self.tasks:
            raise ValueError("--tasks is empty; give at least one task (e.g. synthetic:keyword).")
        if not self.controllers:
            raise ValueError("--controllers is empty; give at least one controller (e.g. fixed,importance).")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"--seeds must be a positive integer (the number of seeds), got {self.seeds!r}.")
        for budget in self.budget_mb:
            if not budget > 0:
                raise ValueError(f"--budget-mb must be positive, got {budget}.")
        if len(set(self.budget_mb)) != len(self.budget_mb):
            raise ValueError(f"--budget-mb lists a budget twice: {self.budget_mb}.")
        for fraction in self.budget_frac:
            if not fraction > 0:
                raise ValueError(f"--budget-frac must be a positive fraction of the reference memory, got {fraction}.")
        if len(set(self.budget_frac)) != len(self.budget_frac):
            raise ValueError(f"--budget-frac lists a budget twice: {self.budget_frac}.")
        if self.budget_trace is not None:
            from rankrl.budget import BudgetTrace

            BudgetTrace.from_csv(self.budget_trace)
        if not self.fixed_ranks or any(rank < 1 for rank in self.fixed_ranks):
            raise ValueError(f"--fixed-ranks must be positive integers, got {self.fixed_ranks}.")
        if any(not lr > 0 for lr in self.fixed_lrs):
            raise ValueError(f"--fixed-lrs must be positive, got {self.fixed_lrs}.")
        if self.num_hidden_layers is not None and self.num_hidden_layers < 1:
            raise ValueError(f"--num-hidden-layers must be >= 1, got {self.num_hidden_layers}.")
        self.finetune_config(seed=0, out=self.out).check()

    def finetune_config(self, *, seed: int, out: str, controller: str = "fixed", data: str = "synthetic:keyword",
                        eval_data: str | None = None, lr: float | None = None, rank: int | None = None,
                        budget_mb: float | None = None, r_max: int | None = None,
                        rank_step: int | None = None, budget_frac: float | None = None,
                        budget_trace: str | None = None) -> FinetuneConfig:
        """The :class:`FinetuneConfig` of one run: every shared setting from here, the rest as given."""
        return FinetuneConfig(
            model=self.model, data=data, eval_data=eval_data, text_column=self.text_column,
            label_column=self.label_column, controller=controller, budget_mb=budget_mb, budget_frac=budget_frac,
            budget_trace=budget_trace,
            memory_scope=self.memory_scope, use_rslora=self.use_rslora, steps=self.steps, every=self.every, eval_every=self.eval_every,
            eval_size=self.eval_size, lr=self.lr if lr is None else lr, batch_size=self.batch_size,
            max_length=self.max_length, rank=self.rank if rank is None else rank, r_max=r_max,
            rank_step=rank_step, num_groups=self.num_groups, num_hidden_layers=self.num_hidden_layers, seed=seed,
            out=out)

    def settings(self) -> dict:
        """Everything that defines the results (all flags but ``out`` and ``resume``), JSON-ready."""
        data = asdict(self)
        data.pop("out")
        data.pop("resume")
        data["tasks"] = split_list(self.tasks)
        data["controllers"] = split_controllers(self.controllers)
        return data
