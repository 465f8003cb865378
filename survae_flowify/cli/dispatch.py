"""The entry point: parse, check the numbers, set the threads, run a command, map errors to codes."""

from __future__ import annotations

import os
import sys

import torch

from survae_flowify.cli.errors import fail
from survae_flowify.cli.parser import build_parser, check_arguments
from survae_flowify.cli.ranks import HARD_EXIT
from survae_flowify.cli.runs import RunError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Run a command and return its exit code (bad input: 2, without a traceback)."""
    from survae_flowify.data import DataError
    from survae_flowify.training import CheckpointError, ConfigError

    args = build_parser().parse_args(argv)
    try:
        check_arguments(args)
    except (ValueError, TypeError) as err:
        return fail(str(err))
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        code = args.func(args)
    except (RunError, DataError, CheckpointError, ConfigError) as err:
        code = fail(str(err))
    except KeyboardInterrupt:
        print("survae-flowify: interrupted", file=sys.stderr)
        code = 130
    if HARD_EXIT[0]:  # a torchrun worker: everything is written; exit without finalization
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
