"""SurVAE's experiments against their twins, trained through the command line on one budget.

Run ``python benchmarks/survae.py [--part maxpool|abs|all] [--steps N] [--seeds 0 1 …]``:

* ``maxpool``: ``survae-maxpool`` (``MaxPool2d(2)``) against its twin ``pool=slice``
  (``Squeeze(2)`` + ``Slice``: the same sizes) on the 8×8 digits: test bits/dim (exact given the
  dequantization: both transforms are exact, the bound is ``Dequantize``'s) and the median of
  the training step time, per seed and as the mean over seeds;
* ``abs``: ``survae-abs`` (``Abs`` first) against ``abs=false`` (the same couplings without it)
  on symmetric 2-D toy densities: test nats.

Every pair trains with the same seed, steps, batch and learning rate (Adam, cosine-annealed), one
CPU thread, through ``survae-flowify train`` (run directories in a temporary folder). Numbers
depend on the machine and its load only through the step times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from survae_flowify.cli import main  # noqa: E402

MAXPOOL_TWINS = {"MaxPool2d": [], "Slice": ["--model-option", "pool=slice"]}
ABS_TWINS = {"Abs": [], "no Abs": ["--model-option", "abs=false"]}
TOY_SETS = ("checkerboard", "eight-gaussians", "circles")


def train(out: Path, model: str, dataset: str, options: list[str], *, steps: int, seed: int,
          batch_size: int, lr: float) -> dict:
    """One quiet CLI training run; its ``summary.json``."""
    # --epochs as large as the steps: the default of 10 epochs would otherwise cap the schedule
    argv = ["train", "--model", model, "--dataset", dataset, *options, "--max-steps", str(steps),
            "--epochs", str(steps),
            "--batch-size", str(batch_size), "--lr", str(lr), "--seed", str(seed), "--threads", "1",
            "--device", "cpu", "--valid-every", "0", "--quiet", "--no-plots", "--out", str(out)]
    with open(out.parent / f"{out.name}.stdout", "w") as sink, contextlib.redirect_stdout(sink):
        rc = main(argv)
    if rc != 0:
        raise SystemExit(f"training failed (exit {rc}): survae-flowify {' '.join(argv)}")
    summary = json.loads((out / "summary.json").read_text())
    if summary["steps"] != steps:
        raise SystemExit(f"trained {summary['steps']} steps, not {steps}: survae-flowify {' '.join(argv)}")
    return summary


def compare(root: Path, model: str, dataset: str, twins: dict[str, list[str]], args: argparse.Namespace,
            metric: str) -> None:
    """Train every twin for every seed; print one row per twin and seed, then the means."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in twins}
    for seed in args.seeds:
        for name, options in twins.items():
            out = root / f"{model}-{dataset}-{name.replace(' ', '_')}-{seed}"
            s = train(out, model, dataset, options, steps=args.steps, seed=seed,
                      batch_size=args.batch_size, lr=args.lr)
            step_ms = 1e3 * s["train_time_s"] / s["steps"]
            results[name].append((s[f"test_{metric}"], step_ms))
            print(f"{model:<15} {dataset:<16} {name:<10} seed {seed}: test {metric} "
                  f"{s[f'test_{metric}']:.4f}, {step_ms:.1f} ms/step, {s['parameters']} parameters",
                  flush=True)
    for name, rows in results.items():
        values = [v for v, _ in rows]
        spread = f" ± {statistics.stdev(values):.4f} (sd)" if len(values) > 1 else ""
        print(f"{model:<15} {dataset:<16} {name:<10} mean over {len(rows)} seed(s): test {metric} "
              f"{statistics.mean(values):.4f}{spread}, median {statistics.median(t for _, t in rows):.1f} "
              "ms/step", flush=True)


def main_(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("maxpool", "abs", "all"), default="maxpool",
                        help="which comparison (default maxpool)")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of every run (default 1000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default 0)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="initial learning rate (default 2e-3)")
    parser.add_argument("--toy", nargs="+", default=list(TOY_SETS), help="2-D data sets for --part abs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, {args.steps} steps, batch {args.batch_size}, "
          f"lr {args.lr:g}, seeds {args.seeds}", flush=True)
    with tempfile.TemporaryDirectory(prefix="survae-bench-") as tmp:
        root = Path(tmp)
        if args.part in ("maxpool", "all"):
            compare(root, "survae-maxpool", "digits", MAXPOOL_TWINS, args, "bpd")
        if args.part in ("abs", "all"):
            for dataset in args.toy:
                compare(root, "survae-abs", dataset, ABS_TWINS, args, "nats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
