"""``report.md``: one table per task, the winner per budget, and honest notes on noise, memory and failures."""

from __future__ import annotations

from pathlib import Path

from rankrl.bench.config import TaskSpec
from rankrl.bench.plan import ADALORA, FIXED
from rankrl.bench.results import ERROR
from rankrl.bench.stats import (
    NOISE,
    SINGLE,
    ArmSummary,
    Paired,
    Stat,
    compare_to_fixed,
    compare_under_budgets,
    summarize,
    winners,
)

REPORT_FILE = "report.md"


def write_report(path: str | Path, settings: dict, tasks: list[TaskSpec], rows: list[dict], planned: int) -> Path:
    """Write ``report.md`` from the rows so far (``planned``: the number of runs the bench will make)."""
    path = Path(path)
    path.write_text(render_report(settings, tasks, rows, planned))
    return path


def render_report(settings: dict, tasks: list[TaskSpec], rows: list[dict], planned: int) -> str:
    """The report as Markdown."""
    scope = settings["memory_scope"]
    budgets = list(settings["budget_mb"])
    summaries = summarize(rows)
    comparisons = compare_to_fixed(rows, summaries)
    finished = sum(row["status"] != ERROR for row in rows)
    lines = ["# rankrl bench", "",
             f"Model `{settings['model']}`, {settings['steps']} steps, batch {settings['batch_size']}, lr "
             f"{settings['lr']:g}, {settings['seeds']} seed(s), rank {settings['rank']} (adaptive start, AdaLoRA "
             f"target), decisions every {settings['every']} steps, memory scope `{scope}`, budget(s): "
             f"{_budgets(settings)}.",
             f"{finished} of {planned} runs finished" + (" (the rest: resume with `--resume`)." if finished < planned
                                                          else "."), ""]
    for task in tasks:
        task_summaries = [s for s in summaries if s.task == task.name]
        lines += [f"## {task.name}", "", f"Data: `{task.label}`", ""]
        if not task_summaries:
            lines += ["No finished runs yet.", ""]
            continue
        lines += _arm_table(task_summaries, comparisons, scope)
        lines += _paired_table(task_summaries, comparisons)
        lines += _budget_table(compare_under_budgets(rows, summaries, task.name), rows, task.name, scope)
        lines += ["", f"### Winner per budget ({scope} memory)", ""]
        lines += _winner_table(winners(rows, task_summaries, budgets), budgets)
        lines.append("")
    lines += _notes(settings, rows)
    return "\n".join(lines) + "\n"


def _budgets(settings: dict) -> str:
    parts = [f"{b:g} MiB" for b in settings.get("budget_mb", [])]
    parts += [f"{f:g} x the reference" for f in settings.get("budget_frac", [])]
    parts += [f"trace `{settings['budget_trace']}`"] if settings.get("budget_trace") else []
    return ", ".join(parts) or "none"


def _pm(stat: Stat | None, digits: int = 3) -> str:
    if stat is None:
        return "-"
    return f"{stat.mean:.{digits}f}" + (f" ± {stat.std:.{digits}f}" if stat.n > 1 else "")


def _num(stat: Stat | None, digits: int = 2) -> str:
    return "-" if stat is None else f"{stat.mean:.{digits}f}"


def _count(stat: Stat | None) -> str:
    return "-" if stat is None else f"{stat.mean:,.0f}"


def _diff(p: Paired) -> str:
    if p.verdict == SINGLE:
        return f"{p.mean:+.3f} (one seed: no interval)"
    return f"{p.mean:+.3f} ± {p.std:.3f}: **{p.verdict}**"


def _paired_table(summaries: list[ArmSummary], comparisons: dict) -> list[str]:
    pairs = [(s, comparisons.get((s.task, s.arm))) for s in summaries if s.kind != FIXED]
    pairs = [(s, p) for s, p in pairs if p is not None]
    if not pairs:
        return []
    lines = ["", "### Paired accuracy differences with the best fixed rank at ≤ memory", "",
             "| arm | fixed rank | per-seed differences | mean ± std | interval (± 2·std/√n) | excludes 0 | verdict |",
             "|---|---|---|---|---|---|---|"]
    for s, p in pairs:
        diffs = ", ".join(f"{d:+.3f}" for d in p.diffs)
        if p.half_width is None:
            interval, excludes = "-", "-"
        else:
            interval = f"[{p.mean - p.half_width:+.3f}, {p.mean + p.half_width:+.3f}]"
            excludes = "yes" if p.excludes_zero else "no"
        spread = f"{p.mean:+.3f}" + (f" ± {p.std:.3f}" if p.n > 1 else "")
        lines.append(f"| {s.arm} | {p.reference} | {diffs} | {spread} | {interval} | {excludes} | {p.verdict} |")
    return lines


def _budget_table(comparisons: list, rows: list[dict], task: str, scope: str) -> list[str]:
    if not comparisons:
        return []
    lines = ["", "### Under each budget: against `static-fit` and the best `oracle-static` allocation", "",
             "Paired by seed. The oracle is the most accurate of the `oracle-static` allocations that fit, chosen "
             "on the evaluation data itself: an upper bound for any static rule, not a deployable arm. Runs whose "
             "measured memory ever exceeded their wall are failed runs and appear in no figure.", "",
             f"| budget | arm | seeds | accuracy | mean MiB ({scope}) | peak MiB | wall violations | − static-fit | "
             "− oracle-static |", "|---|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        s = c.summary
        violations = sum(1 for r in rows if r["task"] == task and r["arm"] == s.arm and r.get("wall_violations"))
        name = f"{s.arm} (oracle)" if s.kind == "oracle" else s.arm
        static = _diff(c.versus_static_fit) if c.versus_static_fit is not None else "-"
        oracle = _diff(c.versus_oracle) if c.versus_oracle is not None else "-"
        lines.append(f"| {c.budget} | {name} | {s.n} | {_pm(s.stats['accuracy'])} | "
                     f"{_num(s.stats['mean_memory_mib'])} | {_num(s.stats['peak_memory_mib'])} | {violations} | "
                     f"{static} | {oracle} |")
    return lines


def _arm_table(summaries: list[ArmSummary], comparisons: dict, scope: str) -> list[str]:
    lines = [f"| arm | kind | seeds | accuracy | macro-F1 | peak MiB ({scope}) | mean MiB ({scope}) | total MiB | "
             "adapter MiB | trainable (end / peak) | controller state MiB | wall s | controller time | "
             "vs best fixed rank at ≤ memory |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sorted(summaries, key=lambda s: (s.kind != FIXED, s.memory if s.kind == FIXED else 0)):
        st = s.stats
        params = f"{_count(st['trainable_params'])} / {_count(st['peak_trainable_params'])}"
        if s.kind == ADALORA:
            params += f" (unmasked {_count(st['effective_params'])})"
        if s.kind == FIXED:
            versus = "(reference)"
        else:
            p = comparisons.get((s.task, s.arm))
            versus = f"{p.reference}: {_diff(p)}" if p is not None else "no fixed rank at ≤ this memory"
        overhead = st["controller_overhead"]
        flags = (f" ({s.failed} failed)" if s.failed else "") + (f" ({s.diverged} diverged)" if s.diverged else "")
        lines.append(f"| {s.arm} | {s.kind} | {s.n}{flags} | {_pm(st['accuracy'])} | {_pm(st['macro_f1'])} | "
                     f"{_pm(st['peak_memory_mib'], 2)} | {_num(st['mean_memory_mib'])} | "
                     f"{_num(st['peak_memory_total_mib'])} | "
                     f"{_num(st['peak_memory_adapter_mib'])} | {params} | {_num(st['controller_state_mib'], 3)} | "
                     f"{_num(st['wall_seconds'], 1)} | "
                     f"{'-' if overhead is None else f'{100 * overhead.mean:.1f}%'} | {versus} |")
    return lines


def _winner_table(results: list, budgets: list[float]) -> list[str]:
    lines = ["| budget | winner | accuracy | peak MiB | runner-up | winner − runner-up | verdict |",
             "|---|---|---|---|---|---|---|"]
    for w in results:
        budget = w.label
        if w.winner is None:
            lines.append(f"| {budget} | no arm fits | - | - | - | - | - |")
            continue
        acc, mem = _pm(w.winner.stats["accuracy"]), _num(w.winner.stats["peak_memory_mib"])
        if w.runner_up is None or w.margin is None:
            lines.append(f"| {budget} | {w.winner.arm} | {acc} | {mem} | - | - | only arm |")
            continue
        m = w.margin
        verdict = ("tie within noise: no clear winner" if m.verdict == NOISE else
                   "one seed: no interval" if m.verdict == SINGLE else f"{w.winner.arm} ahead beyond noise")
        spread = f"{m.mean:+.3f}" + (f" ± {m.std:.3f}" if m.verdict != SINGLE else "")
        lines.append(f"| {budget} | {w.winner.arm} | {acc} | {mem} | {w.runner_up.arm} | {spread} | {verdict} |")
    return lines


def _notes(settings: dict, rows: list[dict]) -> list[str]:
    lines = ["## Notes", "",
             "- **Noise.** Differences are paired per seed (same data order, head and evaluation subset). A "
             "difference is *within noise* when |mean| ≤ 2·std/√n of the per-seed differences (the approximate "
             "95% interval holds 0); only the others are reported as better or worse. One seed gives no interval.",
             "- **Fixed-rank front.** Fixed ranks run without a budget; every budgeted or adaptive arm is compared "
             "with the most accurate fixed rank whose mean peak memory is at most its own.",
             "- **Memory** is measured, not modelled: parameters, gradients, optimizer state and the tensors "
             "autograd saves on one reference batch (the task's first rows padded to `max_length`, the same "
             "for every arm and seed), at the peak over the run. The *reference* memory of a budget fraction is "
             "the run at the starting rank with every group training; `mean` averages the memory in "
             "force at each optimizer step over the run (an arm that starts at the fixed ranks' memory and then "
             "frees some has that fixed rank's peak but a lower mean). `controller state` (importance EMAs, "
             "AdaLoRA's allocator) is kept beside it and shown separately."]
    if settings.get("fixed_lrs"):
        lrs = ", ".join(f"{lr:g}" for lr in settings["fixed_lrs"])
        lines.append(f"- **Learning rates.** Fixed ranks ran at {lrs} and the comparisons take the best of them "
                     "(chosen on the evaluation subset itself, which flatters the baseline); the other arms ran "
                     f"at {settings['lr']:g} only.")
    if not settings["budget_mb"] and any(str(row["controller"]).startswith("learned") for row in rows):
        lines.append("- **Learned policies** without `--budget-mb` run behind the wall they were trained with: "
                     "their `budget_frac` (from `metadata.json`) times the memory measured at the start ranks, as "
                     "in the environment. Their peak is therefore at most the start ranks' memory, and what they "
                     "free shows in the mean.")
    if any(row["kind"] == ADALORA for row in rows):
        lines.append("- **AdaLoRA** (PEFT) only masks singular values: its tensors keep their `init_r` size, so its "
                     "memory and trainable parameters stay at `init_r` whatever rank it allocates; `unmasked` counts "
                     "what survives the masks. Its memory is measured the same way as every other arm's.")
    if all(row.get("cuda_peak_mib") is None for row in rows):
        lines.append("- Runs were on a CPU: there is no CUDA allocator peak (`cuda_peak_mib` is empty).")
    failed = [row for row in rows if row["status"] == ERROR]
    for row in failed:
        lines.append(f"- **Failed:** `{row['run_id']}`: {row['error']} (retried by `--resume`).")
    diverged = [row["run_id"] for row in rows if row.get("diverged")]
    if diverged:
        lines.append(f"- **Diverged** (non-finite loss; excluded from every mean, comparison and winner): "
                     f"{', '.join(f'`{r}`' for r in diverged)}.")
    return lines
