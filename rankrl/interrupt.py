"""Ctrl-C and SIGTERM as a request to stop cleanly, not an exception at a random line.

Click (under Typer) turns ``KeyboardInterrupt`` into its own abort before rankrl's handler runs, and a
``KeyboardInterrupt`` raised inside a save or a subprocess pipe can corrupt what it interrupts. So the
``rankrl`` command installs handlers (:func:`install`) that only *record* the first SIGINT / SIGTERM; the
long loops (``train``'s SB3 callback, ``finetune``'s step loop, ``bench`` between and inside runs) poll
:func:`requested` at safe points, save what they have, and raise :class:`Interrupted` with a message that
says what was kept and the exact command that continues. A second signal stops at once (``KeyboardInterrupt``).

:class:`Interrupted` derives from ``BaseException`` (like ``KeyboardInterrupt``) so that ``except Exception``
in a run's error handling never swallows it, and it is not a ``KeyboardInterrupt``, so Click lets it through
to :func:`rankrl.cli.main`, which prints the message and exits with ``128 + signal``.
"""

from __future__ import annotations

import signal
import threading

_requested: int | None = None
_installed = False


class Interrupted(BaseException):
    """A run stopped on request after saving its state.

    Attributes:
        message: What was kept and how to continue.
        signum: The signal that asked for the stop (``SIGINT`` or ``SIGTERM``).
    """

    def __init__(self, message: str = "", signum: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.signum = signum if signum is not None else (_requested or signal.SIGINT)

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + int(self.signum)


def _handler(signum, frame) -> None:
    global _requested
    if _requested is not None:  # the second signal: stop now
        raise KeyboardInterrupt
    _requested = signum


def install() -> None:
    """Record SIGINT / SIGTERM instead of raising (main thread only; idempotent)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    _installed = True


def requested() -> int | None:
    """The signal number of a pending stop request, ``None`` when there is none."""
    return _requested


def request(signum: int = signal.SIGINT) -> None:
    """Ask the running loop to stop at its next safe point (what the signal handlers do; also for tests)."""
    global _requested
    _requested = signum


def clear() -> None:
    """Forget a stop request (after it has been honoured)."""
    global _requested
    _requested = None


def stop_point(message) -> None:
    """Raise :class:`Interrupted` with ``message()`` (a callable, evaluated only then) when a stop is pending."""
    if _requested is not None:
        raise Interrupted(message(), _requested)


def ignore_in_worker() -> None:
    """In a worker subprocess: leave SIGINT to the parent, which stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
