"""Shared helpers for the surjection tests: grid integration and a test-only bijection."""

from __future__ import annotations

import torch
from torch import Tensor

import survae_flowify as ffn


class LogBijection(ffn.Bijection):
    """``w = log z`` on ``(0, ∞)^D``, contribution ``−Σ log z``: maps the positive orthant onto
    ``R^D``, so a flow behind :class:`Abs` puts all its mass where ``|x|`` lands (test-only)."""

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.log(), -x.log().flatten(1).sum(1)

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return z.exp()


def grid_2d(lo: float, hi: float, n: int, *, shift: float = 0.0) -> tuple[Tensor, float]:
    """The midpoints of an ``n × n`` grid of cells over ``[lo, hi]²`` (``(n², 2)``, float64) and
    the area of one cell; ``shift`` (a fraction of a cell) moves the second coordinate's cells,
    so that no midpoint lies on the diagonal."""
    h = (hi - lo) / n
    t = lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    a, b = torch.meshgrid(t, t + shift * h, indexing="ij")
    return torch.stack([a.flatten(), b.flatten()], 1), h * h


@torch.no_grad()
def mass(flow: ffn.Flow, points: Tensor, cell: float, chunk: int = 40_000) -> float:
    """``Σ exp(log p(point)) · cell``: the midpoint rule for the flow's mass over the grid."""
    total = 0.0
    for start in range(0, points.shape[0], chunk):
        total += float(flow.log_prob(points[start:start + chunk]).exp().sum()) * cell
    return total


class ConeToPlane(ffn.Bijection):
    """``w_1 = z_1``, ``w_i = log(z_i − z_{i−1})``: the sorted cone ``{z_1 < … < z_D}`` onto
    ``R^D``, contribution ``−Σ log(z_i − z_{i−1})`` (test-only), so a flow behind :class:`Sort`
    puts all its mass where sorting lands."""

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        gaps = (x[:, 1:] - x[:, :-1]).log()
        return torch.cat([x[:, :1], gaps], 1), -gaps.sum(1)

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return torch.cat([z[:, :1], z[:, 1:].exp()], 1).cumsum(1)
