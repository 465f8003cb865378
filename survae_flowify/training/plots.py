"""Figures of a run, as PNG: sample grids (stochastic and mean inverse, appendix E),
reconstructions, the loss curve and, for 2-D data, a density heat map.

Matplotlib runs headless (the ``Agg`` backend); every function writes one file and returns its path.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from survae_flowify.algebra import Flow

__all__ = [
    "class_rows",
    "draw_samples",
    "image_grid",
    "save_density_map",
    "save_image_panels",
    "save_loss_curve",
    "save_reconstructions",
    "save_sample_grids",
    "save_scatter",
]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    os.replace(tmp, path)
    return path


def image_grid(images: Tensor, *, levels: int | None, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile ``(N, C, H, W)`` images into one ``(rows·(H+pad), cols·(W+pad)[, 3])`` array in [0, 1].

    Integer-valued images with ``levels`` levels are divided by ``levels − 1``; otherwise values
    are clipped to [0, 1]. Non-finite values show as black.
    """
    x = torch.nan_to_num(images.detach().to("cpu", torch.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if levels:
        x = x / (levels - 1)
    x = x.clamp(0, 1)
    n, c, h, w = x.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad, dtype=x.dtype)
    for i in range(n):
        r, q = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top:top + h, left:left + w] = x[i]
    out = grid.permute(1, 2, 0).numpy()
    return out[..., 0] if c == 1 else out


def save_image_panels(
    path: str | os.PathLike, panels: Sequence[tuple[str, Tensor]], *, levels: int | None,
    nrow: int | None = None,
) -> Path:
    """Side-by-side grids, one per ``(title, images)`` panel, ``nrow`` images a row (default:
    a square grid)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (title, images) in zip(axes[0], panels):
        ax.imshow(image_grid(images, levels=levels, nrow=nrow), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    return _save(fig, path)


def class_rows(num_classes: int, n: int, device: torch.device | str = "cpu") -> Tensor:
    """Labels of a grid with one row per class: ``⌈n / K⌉`` of each class ``0 … K−1`` in turn."""
    per_class = max(1, math.ceil(n / num_classes))
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


@torch.no_grad()
def draw_samples(flow: Flow, n: int, labels: Tensor | None = None) -> dict[str, Tensor]:
    """``{"mean": …, "stochastic": …}``: one set of base draws ``z`` (given ``labels``, one per
    sample, for a conditional flow), inverted by the mean of every inverse density and by
    sampling them, as in the paper's appendix E."""
    context = _embedded(flow, labels)
    z = flow.base.sample(n) if context is None else flow.base.sample(n, context)
    return {"mean": flow.transform.inverse(z, context, mean=True),
            "stochastic": flow.transform.inverse(z, context, mean=False)}


def _embedded(flow: Flow, labels: Tensor | None) -> Tensor | None:
    """The context the layers see: the flow's embedding of ``labels`` (unconditional: ``None``)."""
    if labels is None or flow.context_features is None:
        return None
    return flow.embedding(labels) if flow.embedding is not None else labels


@torch.no_grad()
def save_sample_grids(flow: Flow, path: str | os.PathLike, *, n: int, levels: int | None,
                      num_classes: int | None = None) -> Path:
    """Samples from one set of base draws, by the mean inverse (left) and the stochastic one
    (right). A class-conditional flow (``num_classes`` given) gets one row per class."""
    labels, nrow = None, None
    if flow.context_features is not None and num_classes:
        param = next(flow.parameters(), None)
        labels = class_rows(num_classes, n, param.device if param is not None else "cpu")
        n, nrow = len(labels), len(labels) // num_classes
    samples = draw_samples(flow, n, labels)
    return save_image_panels(
        path, [("samples, mean inverse", samples["mean"]),
               ("samples, stochastic inverse", samples["stochastic"])],
        levels=levels, nrow=nrow,
    )


@torch.no_grad()
def save_reconstructions(flow: Flow, x: Tensor, path: str | os.PathLike, *, levels: int | None,
                         labels: Tensor | None = None) -> Path:
    """Data, ``inverse(forward(x))`` with mean inverses, and with sampled inverses (given the
    examples' ``labels`` for a conditional flow)."""
    context = _embedded(flow, labels)
    z, _ = flow.transform(x, context)
    return save_image_panels(
        path,
        [("data", x), ("reconstruction, mean inverse", flow.transform.inverse(z, context, mean=True)),
         ("reconstruction, stochastic inverse", flow.transform.inverse(z, context, mean=False))],
        levels=levels,
    )


def save_loss_curve(records: Sequence[dict[str, Any]], path: str | os.PathLike, *, metric: str) -> Path:
    """Training and validation ``metric`` (bits/dim or nats) against the step."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, style in (("train", "-"), ("valid", "o-")):
        pts = [(r["step"], r[metric]) for r in records
               if r.get("split") == split and isinstance(r.get(metric), (int, float))]
        if pts:
            steps, values = zip(*pts)
            ax.plot(steps, values, style, label=split, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("bits / dim" if metric == "bpd" else "negative log-likelihood [nats]")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


@torch.no_grad()
def save_density_map(
    flow: Flow, data: Tensor, path: str | os.PathLike, *, bound: float, resolution: int = 120,
    num_samples: int | None = None, batch_size: int = 4096,
) -> Path:
    """For 2-D data: the model density on ``[−bound, bound]²`` (``exp`` of the ELBO, or of the
    importance-weighted bound with ``num_samples``), a histogram of the data, and model samples."""
    plt = _pyplot()
    param = next(flow.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    axis = torch.linspace(-bound, bound, resolution, dtype=torch.float32, device=device)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    logp = torch.cat([flow.log_prob(chunk, num_samples=num_samples)
                      for chunk in grid.split(batch_size)])
    density = torch.nan_to_num(logp.exp(), nan=0.0).reshape(resolution, resolution).cpu().numpy()
    samples = flow.sample(min(len(data), 5000)).cpu().numpy()
    extent = (-bound, bound, -bound, bound)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    axes[0].hist2d(*data.cpu().numpy().T, bins=resolution, range=[[-bound, bound]] * 2, cmap="magma")
    axes[0].set_title("data")
    axes[1].imshow(density, origin="lower", extent=extent, cmap="magma")
    how = "exact" if flow.exact else (f"IW bound, K={num_samples}" if num_samples else "ELBO")
    axes[1].set_title(f"model density ({how})")
    axes[2].hist2d(*samples.T, bins=resolution, range=[[-bound, bound]] * 2, cmap="magma")
    axes[2].set_title("model samples")
    for ax in axes:
        ax.set_aspect("equal")
    return _save(fig, path)


def save_scatter(
    path: str | os.PathLike, panels: Sequence[tuple[str, Tensor]], *, bound: float = 4.0
) -> Path:
    """Vector data: the first two coordinates of each ``(title, points)`` panel, on ``[−bound, bound]²``."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.4), squeeze=False)
    for ax, (title, pts) in zip(axes[0], panels):
        p = torch.nan_to_num(pts.detach().to("cpu", torch.float64)).numpy()
        ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.4)
        ax.set_title(f"{title} (coordinates 1 and 2)", fontsize=10)
        ax.set_xlim(-bound, bound)
        ax.set_ylim(-bound, bound)
        ax.set_aspect("equal")
    return _save(fig, path)
