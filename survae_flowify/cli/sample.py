"""``survae-flowify sample``: a grid of samples (mean and stochastic inverses) and their tensors."""

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
    torch.manual_seed(args.seed)
    with torch.no_grad():
        z = flow.base.sample(args.n)
        samples = {"mean": flow.transform.inverse(z, mean=True).cpu(),
                   "stochastic": flow.transform.inverse(z, mean=False).cpu()}
    panels = [("samples, mean inverse", samples["mean"]),
              ("samples, stochastic inverse", samples["stochastic"])]
    if len(checkpoint["spec"]["data_shape"]) == 3:
        plots.save_image_panels(out, panels, levels=checkpoint["spec"].get("levels"))
    else:
        plots.save_scatter(out, panels)
    torch.save(samples, tensors)
    print(f"sample grid: {out}\nsample tensors: {tensors}")
    return 0
