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


def grid_2d(lo: float, hi: float, n: int) -> tuple[Tensor, float]:
    """The midpoints of an ``n × n`` grid of cells over ``[lo, hi]²`` (``(n², 2)``, float64) and
    the area of one cell."""
    h = (hi - lo) / n
    t = lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    a, b = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([a.flatten(), b.flatten()], 1), h * h


@torch.no_grad()
def mass(flow: ffn.Flow, points: Tensor, cell: float, chunk: int = 40_000) -> float:
    """``Σ exp(log p(point)) · cell``: the midpoint rule for the flow's mass over the grid."""
    total = 0.0
    for start in range(0, points.shape[0], chunk):
        total += float(flow.log_prob(points[start:start + chunk]).exp().sum()) * cell
    return total
