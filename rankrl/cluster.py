"""Connect to Ray for ``--backend ray``: a local Ray, or a cluster at ``--address``; every check up front.

Each failure is one :class:`ClusterError` naming the fix, raised before any run directory exists: the
``ray`` extra missing, an address nobody answers at (a TCP probe with a timeout, so a dead address never
hangs ``ray.init``), and a cluster with fewer CPUs than the workers asked for.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

BACKENDS = ("subprocess", "ray")
"""``--backend`` values of ``rankrl train`` (``rankrl bench`` calls the first one ``local``)."""
PROBE_SECONDS = 5.0
"""How long the TCP probe of an ``--address`` waits before the address counts as unreachable."""
RAY_CLIENT_PORT = 10001
RAY_GCS_PORT = 6379


class ClusterError(ValueError):
    """Ray is missing, unreachable, or too small for the run; nothing was started or written."""


@dataclass
class RayConnection:
    """A Ray session opened (or reused) by :func:`connect_ray`.

    Attributes:
        cpus: CPUs of the cluster (``ray.cluster_resources()``).
        started: Whether this call initialised Ray (then :meth:`close` shuts it down again).
        address: The ``--address`` given (``None``: a local Ray).
    """

    cpus: float
    started: bool
    address: str | None

    def close(self) -> None:
        """Shut Ray down if this connection started it (a Ray initialised by the caller stays up)."""
        if self.started:
            import ray

            ray.shutdown()


def import_ray(flag: str = "--backend ray"):
    """``import ray``, or one clear error naming the extra."""
    try:
        import ray
    except ImportError as err:
        raise ClusterError(
            f"{flag} needs Ray, which is an optional extra: pip install 'rankrl[ray]' "
            f"(or use the default backend)."
        ) from err
    return ray


def connect_ray(
    address: str | None, cpus_needed: int, what: str = "--n-envs", probe_seconds: float = PROBE_SECONDS
) -> RayConnection:
    """Open Ray and check that it has ``cpus_needed`` CPUs.

    Args:
        address: ``None`` for a local Ray with this machine's CPUs, ``auto`` for the cluster started on
            this machine with ``ray start --head``, ``HOST:PORT`` of its head, or ``ray://HOST:PORT`` (Ray
            client). When Ray is already initialised in this process it is reused as it is.
        cpus_needed: CPUs the run occupies at once (one per environment worker or benchmark run).
        what: The flag named in the too-few-CPUs error.
        probe_seconds: Timeout of the TCP probe of ``address``.

    Raises:
        ClusterError: no ``ray`` extra, an unreachable address, or fewer CPUs than ``cpus_needed``.
    """
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        if address not in (None, "", "auto"):
            _probe(address, probe_seconds)
        # Worker output stays in Ray's log files; a worker's error reaches the driver as an exception.
        kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        try:
            if address in (None, ""):
                # Ray starts its workers at niceness 15; on a shared machine they would then lose the CPU to
                # everything else, where SB3's subprocess workers would not. A local Ray's workers are the
                # run's main work: normal priority (a cluster started by `ray start` sets its own).
                os.environ.setdefault("RAY_worker_niceness", "0")
                ray.init(**kwargs)
            else:
                ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
            reason = str(err).rstrip(".")
            raise ClusterError(
                f"Cannot connect to the Ray cluster at --address {address}: {reason}. Start one with "
                "`ray start --head` and pass its address (or `auto` on its head node), or drop "
                "--address for a local Ray."
            ) from None
        started = True
    cpus = float(ray.cluster_resources().get("CPU", 0))
    if cpus_needed > cpus:
        if started:
            ray.shutdown()
        where = "this machine" if address in (None, "") else f"the cluster at {address}"
        raise ClusterError(
            f"{what} {cpus_needed} needs {cpus_needed} CPUs (one per worker), but {where} has "
            f"{cpus:g}; use {what} {int(cpus)} or fewer, or add machines with `ray start --address`."
        )
    return RayConnection(cpus=cpus, started=started, address=address)


def _probe(address: str, seconds: float) -> None:
    """A TCP connect to the address with a timeout: ``ray.init`` itself retries a dead address for minutes."""
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host:
        host, port = host_port, str(RAY_CLIENT_PORT if address.startswith("ray://") else RAY_GCS_PORT)
    try:
        port_number = int(port)
    except ValueError:
        raise ClusterError(f"--address {address} is not HOST:PORT, ray://HOST:PORT or auto.") from None
    try:
        with socket.create_connection((host, port_number), timeout=seconds):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ClusterError(
            f"Cannot reach the Ray cluster at --address {address} ({reason} within {seconds:g} s). "
            "Start it with `ray start --head` on the head node, check the host and port, or drop "
            "--address for a local Ray."
        ) from None
