"""Uniform dequantization of integer-valued data."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from survae_flowify import _state
from survae_flowify.algebra.transform import GenerativeSurjection

__all__ = ["Dequantize"]


class Dequantize(GenerativeSurjection):
    r"""``y = (x + u) / L`` with ``u ~ U(0, 1)^D`` for integer data ``x ∈ {0, …, L−1}^D``.

    Contribution ``V = −D log L`` (``log q(u) = 0``), so ``log p_Y(y) + V`` lower-bounds the
    discrete ``log P(x)``. The inverse is ``x = clamp(⌊L·y⌋, 0, L−1)``. Under
    :func:`survae_flowify.noise_off` the noise is ``u = ½`` (bin centres). Any event shape;
    integer or floating input.
    """

    accepts_integer = True

    def __init__(self, levels: int = 256) -> None:
        super().__init__()
        if not (isinstance(levels, int) and levels >= 2):
            raise ValueError(f"Dequantize: levels must be an int >= 2, got {levels!r}")
        self.levels = levels

    def extra_repr(self) -> str:
        return f"levels={self.levels}"

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        xf = x if x.is_floating_point() else x.to(torch.get_default_dtype())
        if _state.validation_enabled() and bool(((xf < 0) | (xf > self.levels - 1)).any()):
            raise ValueError(
                f"Dequantize(levels={self.levels}): expected integer values in "
                f"[0, {self.levels - 1}], got values in [{xf.min().item()}, {xf.max().item()}]"
            )
        u = torch.rand_like(xf) if _state.noise_enabled() else torch.full_like(xf, 0.5)
        d = xf[0].numel()
        contribution = xf.new_full((xf.shape[0],), -d * math.log(self.levels))
        return (xf + u) / self.levels, contribution

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return torch.clamp(torch.floor(z * self.levels), 0, self.levels - 1)
