"""``--backend ray`` bad input: a missing extra, a dead address, too few CPUs; one clear error each."""

from __future__ import annotations

import sys
import time

import pytest
from typer.testing import CliRunner

from rankrl.cli import app
from rankrl.cluster import ClusterError, connect_ray

runner = CliRunner(env={"COLUMNS": "200"})


def _train(tmp_path, *flags):
    return runner.invoke(
        app,
        [
            "train",
            "--env",
            "tiny",
            "--timesteps",
            "10",
            "--out",
            str(tmp_path / "runs"),
            "--no-progress",
            *flags,
        ],
    )


def test_missing_ray_extra_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as without the extra
    with pytest.raises(ClusterError, match=r"pip install 'rankrl\[ray\]'"):
        connect_ray(None, 1)
    result = _train(tmp_path, "--backend", "ray")
    assert result.exit_code == 2 and "pip install 'rankrl[ray]'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


def test_unreachable_address_fails_fast(tmp_path):
    pytest.importorskip("ray", reason="the ray extra is part of the test set-up")
    started = time.monotonic()
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        result = _train(tmp_path, "--backend", "ray", "--address", address)
        assert result.exit_code == 2, result.output
        assert f"Cannot reach the Ray cluster at --address {address}" in result.output
        assert "ray start --head" in result.output
    assert time.monotonic() - started < 30
    result = _train(
        tmp_path, "--backend", "ray", "--address", "auto"
    )  # no `ray start` cluster on this machine
    assert result.exit_code == 2 and "Cannot connect to the Ray cluster at --address auto" in result.output
    result = _train(tmp_path, "--backend", "ray", "--address", "not-a-port:x")
    assert result.exit_code == 2 and "HOST:PORT" in result.output
    assert not (tmp_path / "runs").exists()


def test_address_without_ray_backend_and_unknown_backend(tmp_path):
    result = _train(tmp_path, "--address", "auto")
    assert result.exit_code == 2 and "--address goes with --backend ray" in result.output
    result = _train(tmp_path, "--backend", "mpi")
    assert result.exit_code == 2 and "--backend must be one of subprocess, ray" in result.output
    assert not (tmp_path / "runs").exists()


def test_more_workers_than_cluster_cpus(tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra is part of the test set-up")
    assert not ray.is_initialized()
    result = _train(tmp_path, "--backend", "ray", "--n-envs", "64")
    assert result.exit_code == 2, result.output
    assert "--n-envs 64 needs 64 CPUs (one per worker)" in result.output and "use --n-envs" in result.output
    assert not (tmp_path / "runs").exists()
    assert not ray.is_initialized(), "the Ray started for the check is shut down again"
