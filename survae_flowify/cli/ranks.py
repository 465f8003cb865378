"""Running a command in every process that torchrun started (one process otherwise)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["HARD_EXIT", "in_every_rank"]

HARD_EXIT = [False]
"""Set under torchrun once a command is done: :func:`~survae_flowify.cli.main` then ends the
process with ``os._exit``, skipping interpreter finalization, during which PyTorch's gloo
threads can abort a worker that has already finished its work."""


def _leave(dist: Any, *, synced: bool) -> None:
    if not dist.enabled:
        return
    if synced:
        dist.barrier()  # when every rank got here normally: leave together
    HARD_EXIT[0] = True


def in_every_rank(command: Callable[[argparse.Namespace, Any], int], args: argparse.Namespace) -> int:
    """Join the process group (when started by torchrun) and run ``command(args, dist)``."""
    from survae_flowify.training import setup

    dist = setup(args.device)
    try:
        code = command(args, dist)
    except BaseException:
        _leave(dist, synced=False)
        raise
    _leave(dist, synced=True)
    return code
