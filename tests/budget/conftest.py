"""Fixtures of the budget tests: the controller tests' tiny session and deployment loop."""

from tests.controllers.conftest import make_loop, session  # noqa: F401  (pytest fixtures)
from tests.signals.conftest import optimizer, rl  # noqa: F401,E402  (pytest fixtures)
