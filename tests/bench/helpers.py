"""Hand-made ``results.csv`` rows for the statistics, report and plot tests (no training)."""

from __future__ import annotations


def row(task: str, arm: str, kind: str, seed: int, accuracy: float, memory: float, rank: int = 4,
        status: str = "ok", **extra) -> dict:
    """One typed row as :meth:`ResultsFile.read` returns it."""
    base = {"run_id": f"{task}/{arm}/seed{seed}", "task": task, "arm": arm, "kind": kind, "controller": arm,
            "start_rank": float(rank), "lr": 1e-3, "budget_mb": None, "seed": float(seed), "status": status,
            "accuracy": accuracy, "macro_f1": accuracy - 0.05, "peak_memory_mib": memory,
            "mean_memory_mib": memory,
            "peak_memory_total_mib": memory, "peak_memory_adapter_mib": memory - 10, "cuda_peak_mib": None,
            "controller_state_mib": 0.1, "trainable_params": 1000.0 * rank, "peak_trainable_params": 1000.0 * rank,
            "effective_params": 1000.0 * rank, "wall_seconds": 1.0, "controller_overhead": 0.01, "diverged": False,
            "error": None}
    base.update(extra)
    return base


def front_rows(task: str = "t") -> list[dict]:
    """Fixed ranks 2 / 4 / 8 (more memory, more accuracy), an arm clearly better than rank 4 at rank-4 memory,
    one inside the noise, and one cheaper than every fixed rank; three seeds each."""
    rows = []
    for seed, noise in enumerate((0.0, 0.01, -0.01)):
        rows += [row(task, "fixed:2", "fixed", seed, 0.70 + noise, 12.0, rank=2),
                 row(task, "fixed:4", "fixed", seed, 0.75 + noise, 13.0),
                 row(task, "fixed:8", "fixed", seed, 0.80 + noise, 15.0, rank=8),
                 row(task, "good", "adaptive", seed, 0.78 + noise + 0.002 * seed, 13.0),
                 row(task, "noisy", "adaptive", seed, 0.75 + (0.03, -0.04, 0.02)[seed], 14.0),
                 row(task, "tiny", "adaptive", seed, 0.60 + noise, 11.0)]
    return rows
