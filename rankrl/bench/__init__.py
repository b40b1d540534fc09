"""``rankrl bench``: every way of spending LoRA rank on the same model, data, steps, learning rate and seeds.

* :mod:`.config`: :class:`BenchConfig` (the flags) and the task syntax ``[NAME=]TRAIN[:EVAL]``;
* :mod:`.plan`: arms (fixed ranks, adaptive controllers per budget, AdaLoRA) and the list of runs;
* :mod:`.preflight`: every check before the first run; :mod:`.runner`: one run (``run_finetune``);
* :mod:`.adalora`: PEFT's own AdaLoRA as the ecosystem's baseline;
* :mod:`.results`: ``results.csv``; :mod:`.stats`: means, paired comparisons, winners;
* :mod:`.report`: ``report.md``; :mod:`.plot`: ``pareto.png``; :mod:`.harness`: :func:`run_bench`, resume.

Example::

    from rankrl.bench import BenchConfig, run_bench

    result = run_bench(BenchConfig(model="tiny", tasks=["synthetic:keyword"], controllers=["fixed", "importance",
                                   "adalora"], seeds=2, steps=50, out="runs/bench-tiny"))
    result.comparisons  # per (task, arm): paired accuracy difference to the best fixed rank at <= memory
"""

from rankrl.bench.config import BenchConfig, TaskSpec, parse_task, split_controllers
from rankrl.bench.harness import BenchResult, run_bench
from rankrl.bench.plan import Arm, PlannedRun, expand_arms
from rankrl.bench.results import COLUMNS, RESULTS_FILE
from rankrl.bench.stats import ArmSummary, Paired, paired, summarize

__all__ = [
    "COLUMNS",
    "RESULTS_FILE",
    "Arm",
    "ArmSummary",
    "BenchConfig",
    "BenchResult",
    "Paired",
    "PlannedRun",
    "TaskSpec",
    "expand_arms",
    "paired",
    "parse_task",
    "run_bench",
    "split_controllers",
    "summarize",
]
