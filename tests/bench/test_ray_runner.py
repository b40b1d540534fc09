"""``rankrl bench --backend ray``: the rows of a local bench, Ctrl-C and ``--resume`` as locally."""

from __future__ import annotations

import csv

import pytest

from rankrl.interrupt import Interrupted

ray = pytest.importorskip("ray", reason="the ray extra is part of the test set-up (make setup installs it)")

from rankrl.bench import run_bench  # noqa: E402
from tests.bench.conftest import tiny_config  # noqa: E402

TIMING = {"wall_seconds", "train_seconds", "controller_seconds", "controller_overhead", "run_dir"}


pytestmark = pytest.mark.usefixtures("local_ray")


def _rows(out) -> dict[str, dict]:
    with (out / "results.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len({r["run_id"] for r in rows}) == len(rows), "one row per run"
    return {r["run_id"]: {k: v for k, v in r.items() if k not in TIMING} for r in rows}


def test_ray_bench_gives_the_local_rows_and_survives_ctrl_c(tmp_path, monkeypatch):
    settings = {"controllers": ["fixed:2,importance,adalora"], "seeds": 1}
    local = run_bench(tiny_config(tmp_path / "local", **settings), progress=False)
    assert local.ran == 3 and not local.failed

    real_wait, finished = ray.wait, []

    def interrupted_wait(refs, **kwargs):
        if len(finished) == 1:
            raise KeyboardInterrupt  # Ctrl-C while runs are queued and running, after one has finished
        done, rest = real_wait(refs, **kwargs)
        finished.extend(done)
        return done, rest

    monkeypatch.setattr(ray, "wait", interrupted_wait)
    config = tiny_config(tmp_path / "ray", **settings)
    with pytest.raises(Interrupted, match="1 of 3 runs are finished.*--resume"):
        run_bench(config, progress=False, backend="ray")
    assert len(_rows(tmp_path / "ray")) == 1
    assert "1 of 3 runs finished" in (tmp_path / "ray" / "report.md").read_text()
    monkeypatch.setattr(ray, "wait", real_wait)

    config.resume = True
    resumed = run_bench(config, progress=False, backend="ray")
    # A run that finished in its worker between the Ctrl-C and the cancel has no row yet: --resume recovers it
    # from its directory (skipped), so 1 or 2 runs are skipped and the rest run again.
    assert 1 <= resumed.skipped <= 2 and resumed.skipped + resumed.ran == 3 and not resumed.failed
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "local")
    assert (tmp_path / "ray" / "report.md").exists() and (tmp_path / "ray" / "pareto.png").exists()


def test_bench_backend_bad_input(tmp_path):
    with pytest.raises(ValueError, match="--backend must be one of local, ray"):
        run_bench(tiny_config(tmp_path / "a"), progress=False, backend="subprocess")
    with pytest.raises(ValueError, match="--address goes with --backend ray"):
        run_bench(tiny_config(tmp_path / "a"), progress=False, address="auto")
    assert not (tmp_path / "a").exists()
