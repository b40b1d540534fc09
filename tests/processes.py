"""Run ``rankrl`` in a real subprocess and stop it with a signal when a file appears (signal and fault tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def tiny_agent(eval_freq: int = 1000, checkpoint_freq: int = 10, n_epochs: int = 2) -> str:
    """An agent preset (YAML) small enough for a test: PPO, one 16-unit layer, 10-step rollouts."""
    return (f"algo: PPO\nnet_arch: [16]\nhyperparams:\n  n_steps: 10\n  batch_size: 10\n  n_epochs: {n_epochs}\n"
            f"eval_freq: {eval_freq}\neval_episodes: 1\ncheckpoint_freq: {checkpoint_freq}\n")


TINY_AGENT = tiny_agent()

TINY_FINETUNE = ["--model", "tiny", "--data", "synthetic:keyword?n_train=256&n_eval=64", "--rank", "4",
                 "--num-groups", "2", "--batch-size", "8", "--max-length", "32", "--eval-size", "48", "--lr", "3e-3",
                 "--no-progress"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def rankrl(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    """Start ``rankrl ARGS`` (``python -m rankrl.cli``) with one torch thread and the hub offline."""
    return subprocess.Popen([sys.executable, "-m", "rankrl.cli", *map(str, args)], env=ENV, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``rankrl ARGS`` to the end."""
    return subprocess.run([sys.executable, "-m", "rankrl.cli", *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def wait_for(predicate, process: subprocess.Popen, timeout: float = 240, poll: float = 0.05) -> bool:
    """Poll ``predicate()`` until it holds (``True``) or the process ends or time runs out (``False``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(poll)
    return False


def stop(process: subprocess.Popen, signum: int = signal.SIGINT, timeout: float = 120) -> tuple[int, str, str]:
    """Send ``signum``, wait for the exit; return ``(exit code, stdout, stderr)``."""
    if process.poll() is None:
        process.send_signal(signum)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def kill(process: subprocess.Popen) -> None:
    """SIGKILL (no handler runs) and reap."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


def files_under(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file()]


def half_written(root: Path) -> list[Path]:
    """Files a kill may leave half-written: rankrl's temporary names (``.NAME.tmp-PID``, ``*.partial.zip``,
    ``.step_N.tmp-PID``). Their final names are created by a rename, so only these can be incomplete."""
    return [p for p in Path(root).rglob("*") if ".tmp-" in p.name or p.name.endswith(".partial.zip")]
