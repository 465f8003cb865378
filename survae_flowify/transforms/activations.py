"""Elementwise bijective activations."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from survae_flowify import _checks
from survae_flowify.algebra.transform import Bijection

__all__ = ["LeakyReLU"]


class LeakyReLU(Bijection):
    r"""``z = x`` for ``x ≥ 0`` and ``z = a·x`` otherwise, ``a > 0`` (the paper uses 0.5).

    Contribution ``V = log(a) · #{i : x_i < 0}``. Any event shape.
    """

    def __init__(self, negative_slope: float = 0.5) -> None:
        super().__init__()
        # 0 (or a non-finite slope) would make the map non-invertible.
        self.negative_slope = _checks.positive_float("LeakyReLU", "negative_slope", negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        neg = x < 0
        z = torch.where(neg, x * self.negative_slope, x)
        contribution = neg.flatten(1).sum(1).to(x.dtype) * math.log(self.negative_slope)
        return z, contribution

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return torch.where(z < 0, z / self.negative_slope, z)
