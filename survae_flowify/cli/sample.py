"""``survae-flowify sample``: a grid of samples (mean and stochastic inverses) and their tensors.

A class-conditional run draws one row per class, or with ``--label K`` all samples of class K.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from survae_flowify.cli import runs
from survae_flowify.cli.errors import UsageError

__all__ = ["command"]


def command(args: argparse.Namespace) -> int:
    from survae_flowify.training import plots, resolve_device

    flow, checkpoint = runs.load_run(args.run, resolve_device(args.device))
    run_dir = Path(checkpoint["path"]).parent
    default = f"samples-step{checkpoint['step']}-n{args.n}-seed{args.seed}.png"
    out = Path(args.out) if args.out else run_dir / default
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out must name a .png file, got {out}")
    tensors = out.with_suffix(".pt")
    if out.exists() or tensors.exists():
        raise UsageError(f"{out if out.exists() else tensors} already exists; nothing was overwritten. "
                         "Choose another --out or --seed")
    labels, nrow = _labels(args, checkpoint["spec"])
    n = args.n if labels is None else len(labels)
    torch.manual_seed(args.seed)
    with torch.no_grad():
        param = next(flow.parameters())
        drawn = plots.draw_samples(flow, n, None if labels is None else labels.to(param.device))
        samples = {k: v.cpu() for k, v in drawn.items()}
    if labels is not None:
        samples["labels"] = labels
    panels = [("samples, mean inverse", samples["mean"]),
              ("samples, stochastic inverse", samples["stochastic"])]
    if len(checkpoint["spec"]["data_shape"]) == 3:
        plots.save_image_panels(out, panels, levels=checkpoint["spec"].get("levels"), nrow=nrow)
    else:
        plots.save_scatter(out, panels)
    torch.save(samples, tensors)
    print(f"sample grid: {out}\nsample tensors: {tensors}")
    return 0


def _labels(args: argparse.Namespace, spec: dict) -> tuple[torch.Tensor | None, int | None]:
    """The class of every sample and the grid's row length: ``(None, None)`` unconditionally."""
    from survae_flowify.training import plots

    if not spec.get("conditional"):
        if args.label is not None:
            raise UsageError(f"--label {args.label}: this run is not class-conditional (it was "
                             "trained without --conditional); drop --label")
        return None, None
    k = int(spec["num_classes"])
    if args.label is None:
        labels = plots.class_rows(k, args.n)
        return labels, len(labels) // k
    if not 0 <= args.label < k:
        raise UsageError(f"--label must be a class in 0 … {k - 1} ({k} classes), got {args.label}")
    return torch.full((args.n,), args.label, dtype=torch.long), None
