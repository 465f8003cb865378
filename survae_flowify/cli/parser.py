"""The argument parser of ``survae-flowify`` and the checks of its numeric flags.

Numbers are parsed by argparse (``int``/``float``) and then checked through
:mod:`survae_flowify._checks` by :func:`check_arguments`, so a bad value is one line naming the
flag, what it must be and what came (exit code 2), never a traceback from deep inside torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from typing import Any

from survae_flowify import _checks
from survae_flowify.cli.presets import PRESETS
from survae_flowify.training.config import MAX_SEED

__all__ = ["build_parser", "check_arguments"]

Check = Callable[[str, str, Any], Any]
_POSITIVE: Check = _checks.positive_int
_COUNT: Check = partial(_checks.integer, minimum=0)
_SEED: Check = partial(_checks.integer, minimum=0, maximum=MAX_SEED)
_RATE: Check = _checks.positive_float
_NON_NEGATIVE: Check = partial(_checks.finite_float, minimum=0.0)


class _Builder:
    """Adds arguments to one subcommand and records the check of each numeric one."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser, self.checks = parser, []

    def add(self, *flags: str, check: Check | None = None, **kwargs: Any) -> None:
        action = self.parser.add_argument(*flags, **kwargs)
        if check is not None:
            self.checks.append((action.dest, max(flags, key=len), check))

    def done(self, func: Callable[..., int]) -> None:
        self.parser.set_defaults(func=func, checks=tuple(self.checks))


def check_arguments(args: argparse.Namespace) -> None:
    """Check every numeric flag that was given (``ValueError``/``TypeError`` naming the flag)."""
    for dest, flag, check in getattr(args, "checks", ()):
        value = getattr(args, dest, None)
        if value is not None:
            check(f"survae-flowify {args.command}", flag, value)


def _add_common(b: _Builder) -> None:
    b.add("--device", choices=("auto", "cpu", "cuda"), default="auto",
          help="where to run: the GPU when there is one (auto), or force cpu/cuda (default: auto)")
    b.add("--data-dir", metavar="DIR",
          help="directory holding the data set (or a parent holding its usual subdirectory, "
          "e.g. fashion-mnist/, power/); default: the data set's own default place, e.g. "
          "/usr/share/datasets/fashion-mnist, or $SURVAE_FLOWIFY_DATA/<name>")
    b.add("--threads", type=int, metavar="N", check=_POSITIVE,
          help="CPU threads for PyTorch (default: the preset's, else PyTorch's choice)")


def _add_train(sub: Any, func: Callable[..., int]) -> None:
    b = _Builder(sub.add_parser("train", help="train a model", description=(
        "Train a flowified model. Defaults follow the paper (appendix F): Adam, learning rate 5e-4 "
        "annealed to 0 by a cosine schedule over all steps, batch 256. Writes metrics.jsonl, "
        "checkpoint.pt (atomically, each epoch), summary.json and PNG figures into the run "
        "directory. Ctrl-C saves the checkpoint and stops; --resume continues.")))
    b.add("--preset", choices=tuple(PRESETS),
          help="demo: small flowified conv net on the 8x8 digits, a fixed schedule of 300 epochs on "
          "one thread (~2 minutes); paper: the paper's schedule (200 epochs for 28x28 images, 1000 "
          "for CIFAR-10). Flags override it")
    b.add("--model", help="model name, e.g. fmlp, fconv1, fconv2, fconv1-nsf, fconv2-nsf, "
          "glow, tabular-mlp, small-mlp, small-conv, survae-abs (2-D toys; --model-option "
          "abs=false: its twin), survae-maxpool (images; pool=slice: its twin) (see "
          "`survae-flowify list`); default depends on the data")
    b.add("--dataset", help="data set, e.g. digits (default, no download), fashion-mnist, mnist, "
          "cifar10, power, gas, hepmass, miniboone, bsds300, moons, checkerboard (see `list`)")
    b.add("--model-option", action="append", metavar="KEY=VALUE",
          help="extra keyword for the model builder, e.g. inverse_density=normal, noise=uniform "
          "(repeatable); one that changes nothing in the model is refused")
    b.add("--conditional", action="store_const", const=True,
          help="train a class-conditional model p(x | label): the label, one-hot encoded, is the "
          "context of a conditional base and of every reducing layer's inverse density. Needs a "
          "labelled data set (digits, mnist, fashion-mnist, cifar10); kept by --resume")
    b.add("--out", metavar="DIR", help="run directory (default: runs/<model>-<dataset>-<time>); "
          "must not exist or be empty, and is claimed for this training alone")
    b.add("--resume", metavar="RUN", help="continue the run in RUN (its directory or checkpoint "
          "file): same step count, data order and learning-rate schedule")
    b.add("--stop-after", type=int, metavar="STEPS", check=_POSITIVE,
          help="pause after this many steps of this invocation (checkpoint saved; continue "
          "with --resume), e.g. to fit a job's time slot; not part of the schedule")
    b.add("--epochs", type=int, check=_POSITIVE,
          help="passes over the training set (default 10; with --time-budget: no limit unless given)")
    b.add("--batch-size", type=int, check=_POSITIVE,
          help="global batch size, split over DDP processes (default 256)")
    b.add("--lr", type=float, check=_RATE, help="initial learning rate, annealed to 0 (default 5e-4)")
    b.add("--weight-decay", type=float, check=_NON_NEGATIVE, help="Adam weight decay (default 0)")
    b.add("--clip-grad", type=float, metavar="NORM", check=_RATE,
          help="clip the gradient norm (default: off)")
    b.add("--max-steps", type=int, check=_POSITIVE,
          help="stop after this many steps (also the schedule's length)")
    b.add("--time-budget", dest="time_budget_s", type=float, metavar="SECONDS", check=_RATE,
          help="train for this long (at least 90%% of it): the schedule's length is re-estimated "
          "from the recent speed every 10 steps, so results depend on the machine and its load. "
          "Not capped by the default --epochs; an explicit --epochs or --max-steps still caps it")
    b.add("--subset", type=int, metavar="N", check=_POSITIVE,
          help="use only the first N examples of each split")
    b.add("--eval-samples", type=int, metavar="K", check=_POSITIVE,
          help="also report the importance-weighted test bound with K samples")
    b.add("--eval-batch-size", type=int, check=_POSITIVE,
          help="batch size for evaluation (default: --batch-size)")
    b.add("--valid-every", type=int, metavar="EPOCHS", check=_COUNT,
          help="validate every this many epochs (0: never; default 1)")
    b.add("--log-every", type=int, metavar="STEPS", check=_POSITIVE,
          help="metrics line every this many steps (default 10)")
    b.add("--checkpoint-every", type=int, metavar="STEPS", check=_COUNT,
          help="also checkpoint every this many steps (default 0: at each epoch's end only)")
    b.add("--checkpoint-minutes", type=float, metavar="MIN", check=_RATE,
          help="also checkpoint when this many minutes passed since the last (> 0; default 10)")
    b.add("--seed", type=int, check=_SEED,
          help=f"random seed in [0, {MAX_SEED}]: initialisation, data order, noise (default 0)")
    b.add("--quiet", action="store_const", const=True,
          help="no progress bar or progress lines (bars also stay off when not on a terminal)")
    b.add("--no-plots", dest="plots", action="store_const", const=False, help="skip the PNG figures")
    b.add("--plot-samples", type=int, metavar="N", check=_POSITIVE,
          help="samples in the grids (default 64)")
    b.add("--compile", action="store_const", const=True,
          help="torch.compile the loss and its backward (first step compiles: tens of seconds on a CPU)")
    _add_common(b)
    b.done(func)


def _add_evaluate(sub: Any, func: Callable[..., int]) -> None:
    b = _Builder(sub.add_parser("evaluate", help="evaluate a checkpoint", description=(
        "Negative log-likelihood bound of a checkpoint on a split: bits/dim for images, nats "
        "otherwise; with --eval-samples K also the importance-weighted bound. Prints JSON and "
        "appends it to the run's evaluations.jsonl.")))
    b.add("run", help="run directory or checkpoint file")
    b.add("--split", choices=("test", "valid", "train"), default="test", help="split (default test)")
    b.add("--eval-samples", type=int, metavar="K", check=_POSITIVE,
          help="importance samples per example")
    b.add("--batch-size", type=int, default=256, check=_POSITIVE,
          help="evaluation batch size (default 256)")
    _add_common(b)
    b.done(func)


def _add_sample(sub: Any, func: Callable[..., int]) -> None:
    b = _Builder(sub.add_parser("sample", help="draw samples from a checkpoint", description=(
        "Draw N samples from one set of base draws, inverted with the mean of every inverse "
        "density and by sampling them (the paper's appendix E); writes a PNG and the tensors (.pt).")))
    b.add("run", help="run directory or checkpoint file")
    b.add("-n", type=int, default=64, check=_POSITIVE, help="number of samples (default 64)")
    b.add("--seed", type=int, default=0, check=_SEED, help="random seed (default 0)")
    b.add("--label", type=int, metavar="K", check=_COUNT,
          help="class-conditional run: all N samples of class K (default: one row per class, "
          "ceil(N / classes) samples each)")
    b.add("--out", metavar="FILE.png",
          help="output image (default: in the run directory); never overwritten")
    _add_common(b)
    b.done(func)


def _add_bench(sub: Any, func: Callable[..., int]) -> None:
    b = _Builder(sub.add_parser("bench", help="time a model", description=(
        "Median time of a training step, an evaluation and a batch of samples on synthetic data "
        "of a data set's shape (no data files needed).")))
    b.add("--model", help="model name (default: the data set's default model)")
    b.add("--dataset", default="mnist", help="data set whose shape to use (default mnist)")
    b.add("--model-option", action="append", metavar="KEY=VALUE", help="extra model keyword")
    b.add("--batch-size", type=int, default=256, check=_POSITIVE, help="batch size (default 256)")
    b.add("--steps", type=int, default=5, check=_POSITIVE, help="timed repetitions (default 5)")
    b.add("--json", action="store_true", help="print one JSON line")
    _add_common(b)
    b.done(func)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``survae-flowify``: one subcommand per module of this package."""
    from survae_flowify import cli
    from survae_flowify.cli import bench, catalog, evaluate, sample, train

    parser = argparse.ArgumentParser(
        prog="survae-flowify", description="Train, evaluate, sample and time flowified models "
        "(Máté et al., NeurIPS 2022).", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(cli.__doc__ or "").split("Examples::", 1)[-1])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub, train.command)
    _add_evaluate(sub, evaluate.command)
    _add_sample(sub, sample.command)
    _add_bench(sub, bench.command)
    b = _Builder(sub.add_parser("list", help="list models, data sets and presets"))
    b.done(catalog.command)
    return parser
