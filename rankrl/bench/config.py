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
from dataclasses import asdict, dataclass

from rankrl.controllers import CONTROLLERS
from rankrl.data import is_synthetic_source, parse_synthetic_source
from rankrl.deploy.finetune import FinetuneConfig
from rankrl.settings import REQUIRED, RunSettings, number_list, setting, split_list
from rankrl.settings import parse_numbers as parse_numbers  # the parser of the number options, re-exported

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
class BenchConfig(RunSettings):
    """The flags of ``rankrl bench`` (saved as ``DIR/config.json``; a resume must match it): the shared
    :class:`RunSettings`, handed to every run, and these."""

    tasks: list[str] = setting(
        help="Comma-separated tasks, each [NAME=]TRAIN[:EVAL]: synthetic:NAME[?..], a .tsv/.csv/.jsonl file "
        "(TRAIN:EVAL adds an eval file) or a hub dataset id.", panel="Model and task", parse=split_list,
        cli_default=REQUIRED, default_factory=lambda: ["synthetic:keyword"])
    controllers: list[str] = setting(
        help="Comma-separated: fixed[:R] | layerwise[:R,R,..] | importance | complexity | variance | "
        "greedy-memory | static-fit | autofreeze | learned:PATH | adalora[:key=value,..] (PEFT AdaLoRA) | "
        "oracle-static (a grid of static allocations that fit each budget).", panel="Controller",
        parse=split_controllers, default_factory=lambda: list(DEFAULT_CONTROLLERS))
    fixed_ranks: list[int] = setting(help="Ranks of a bare 'fixed' (the fixed-rank front).", panel="Controller",
                                     parse=number_list("--fixed-ranks", integer=True),
                                     default_factory=lambda: list(DEFAULT_FIXED_RANKS))
    fixed_lrs: list[float] = setting(help="Learning rates of the fixed-rank runs, e.g. 5e-4,1e-3,2e-3 (default: "
                                     "--lr only).", panel="Controller", parse=number_list("--fixed-lrs"),
                                     default_factory=list)
    budget_mb: list[float] = setting(help="Memory budget(s) in MiB for the adaptive controllers, comma-separated "
                                     "(one arm per budget); none by default.", panel="Memory budget",
                                     parse=number_list("--budget-mb"), default_factory=list)
    budget_frac: list[float] = setting(help="Budget(s) as fractions of the reference memory (the run at --rank "
                                       "with every group training, measured on the same batch for every arm and "
                                       "seed), e.g. 0.4,0.6,0.8,1.0.", panel="Memory budget",
                                       parse=number_list("--budget-frac"), default_factory=list)
    budget_trace: str | None = setting(None, "A moving budget for one more arm per controller: a CSV file "
                                       "step,budget_mb or step,budget_frac.", panel="Memory budget")
    memory_scope: str = setting("total", "'total' or 'adapter': the scope of budgets and comparisons, the same "
                                "for every arm (learned policies included).", panel="Memory budget")
    seeds: int = setting(3, "Seeds per arm (0..N-1).", panel="Training")
    out: str = setting("runs/bench", "Benchmark directory (must not exist or be empty, unless --resume).",
                       panel="Run", cli_default=REQUIRED)
    resume: bool = setting(False, "Continue --out: skip finished runs (same settings required).", panel="Run")

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
        shared = {**self.shared_settings(), "lr": self.lr if lr is None else lr,
                  "rank": self.rank if rank is None else rank, "r_max": r_max, "rank_step": rank_step}
        return FinetuneConfig(**shared, data=data, eval_data=eval_data, controller=controller, budget_mb=budget_mb,
                              budget_frac=budget_frac, budget_trace=budget_trace, memory_scope=self.memory_scope,
                              seed=seed, out=out)

    def settings(self) -> dict:
        """Everything that defines the results (all flags but ``out`` and ``resume``), JSON-ready."""
        data = asdict(self)
        data.pop("out")
        data.pop("resume")
        data.pop("trust_policy")  # permission to load a file, not a setting of the results
        data["tasks"] = split_list(self.tasks)
        data["controllers"] = split_controllers(self.controllers)
        return data
