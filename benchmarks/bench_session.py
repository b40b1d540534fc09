"""Cost of resetting a fine-tuning session (fresh adapters on the cached frozen base) against a train step.

The RL environment resets its session every episode, so a reset must cost about as much as a training
step, not a model load. Figures are ratios measured in the same run, MiniLM-L6 and the tiny model.

Run: ``.venv/bin/python benchmarks/bench_session.py``
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import datasets
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rankrl.models import load_model  # noqa: E402
from rankrl.session import FineTuneSession, SessionConfig  # noqa: E402


def measure(model: str, repeats: int = 5) -> dict[str, float]:
    config = SessionConfig(model=model, task="synthetic:negation?n_train=512&n_eval=128", batch_size=16,
                           max_length=64, eval_size=64, num_groups=4 if model != "tiny" else 2)
    started = time.perf_counter()
    session = FineTuneSession(config)
    first = time.perf_counter() - started
    session.train(2)  # warm-up
    resets, steps = [], []
    for seed in range(repeats):
        started = time.perf_counter()
        session.reset(seed=seed)
        resets.append(time.perf_counter() - started)
        session.train(1)
        started = time.perf_counter()
        session.train(3)
        steps.append((time.perf_counter() - started) / 3)
    started = time.perf_counter()
    load_model(model, num_labels=2)
    load = time.perf_counter() - started
    step = statistics.median(steps)
    return {"reset/step": statistics.median(resets) / step, "load/step": load / step,
            "first_session/step": first / step, "step_ms": step * 1000}


def main() -> None:
    torch.set_num_threads(2)
    datasets.disable_progress_bars()
    for model in ("default", "tiny"):
        figures = measure(model)
        print(f"{model:8s} reset / train step {figures['reset/step']:.2f}   model load / train step "
              f"{figures['load/step']:.2f}   first session (load + data + attach) / train step "
              f"{figures['first_session/step']:.1f}   (step {figures['step_ms']:.0f} ms, for scale only)")


if __name__ == "__main__":
    main()
