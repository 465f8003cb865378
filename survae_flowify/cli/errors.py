"""How the command line reports what a user can fix: one line on stderr, exit code 2."""

from __future__ import annotations

import sys

from survae_flowify.cli.runs import RunError

__all__ = ["UsageError", "fail"]

UsageError = RunError
"""Bad input from the user (the same class as :class:`~survae_flowify.cli.runs.RunError`)."""


def fail(message: str) -> int:
    """Print ``survae-flowify: error: message`` and return exit code 2."""
    print(f"survae-flowify: error: {message}", file=sys.stderr)
    return 2
