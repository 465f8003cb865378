"""The ``survae-flowify`` command line: train, evaluate, sample, bench, list.

Examples::

    survae-flowify train --preset demo                      # ~2 minutes on one CPU core
    survae-flowify train --model fconv1 --dataset fashion-mnist --epochs 5 --out runs/fconv1
    survae-flowify train --resume runs/fconv1                # continue step count and schedule
    survae-flowify evaluate runs/fconv1 --eval-samples 100   # importance-weighted test bound
    survae-flowify sample runs/fconv1 -n 64
    survae-flowify bench --model fmlp --dataset mnist
    torchrun --nproc-per-node 2 -m survae_flowify.cli train …   # DDP (gloo on CPU, NCCL on GPU)

Exit codes: 0 done, 1 training diverged (non-finite loss), 2 bad input (unknown model or data
set, missing or too small data, bad numbers, unreadable or mismatched checkpoint, existing or
claimed output), 130 interrupted (the checkpoint is saved; continue with ``--resume``).

One module per job: ``parser`` (flags and their checks), ``presets``, ``train``, ``evaluate``,
``sample``, ``bench``, ``catalog`` (``list``), ``dispatch`` (``main``) and ``runs``, the part
Python users call: spec ↔ flow ↔ checkpoint ↔ run directory.
"""

from survae_flowify.cli import runs
from survae_flowify.cli.dispatch import main
from survae_flowify.cli.parser import build_parser
from survae_flowify.cli.presets import PRESETS
from survae_flowify.cli.runs import default_model

__all__ = ["PRESETS", "build_parser", "default_model", "main", "runs"]
