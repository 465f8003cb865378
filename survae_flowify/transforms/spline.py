"""Monotonic rational-quadratic spline activation (Durkan et al., 2019) with linear tails."""

from __future__ import annotations

import math

import torch
from nflows.transforms.splines.rational_quadratic import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
    unconstrained_rational_quadratic_spline,
)
from torch import Tensor, nn

from survae_flowify.algebra.transform import Bijection

__all__ = ["RqSpline"]


class RqSpline(Bijection):
    r"""Elementwise monotonic rational-quadratic spline on ``[−B, B]``, identity outside.

    One spline per layer, shared by every entry (the paper's activation: 10 bins, bound 2).
    Its ``K`` bin widths and heights and ``K−1`` interior derivatives are learned
    (unconstrained, as in nflows); derivatives at ``±B`` are 1 so the linear tails join
    smoothly. Contribution ``V = Σ_i log g'(x_i)``. Any event shape. Initialised to the
    identity.
    """

    def __init__(self, num_bins: int = 10, tail_bound: float = 2.0) -> None:
        super().__init__()
        if not (isinstance(num_bins, int) and num_bins >= 1):
            raise ValueError(f"RqSpline: num_bins must be a positive int, got {num_bins!r}")
        if not tail_bound > 0:
            raise ValueError(f"RqSpline: tail_bound must be > 0, got {tail_bound!r}")
        self.num_bins = num_bins
        self.tail_bound = float(tail_bound)
        self.unnormalized_widths = nn.Parameter(torch.zeros(num_bins))
        self.unnormalized_heights = nn.Parameter(torch.zeros(num_bins))
        # softplus⁻¹(1 − min_derivative): interior derivatives start at exactly 1 (identity).
        one = math.log(math.expm1(1 - DEFAULT_MIN_DERIVATIVE))
        self.unnormalized_derivatives = nn.Parameter(torch.full((num_bins - 1,), one))

    def extra_repr(self) -> str:
        return f"num_bins={self.num_bins}, tail_bound={self.tail_bound}"

    def _spline(self, x: Tensor, *, inverse: bool) -> tuple[Tensor, Tensor]:
        shape = (*x.shape, -1)
        y, log_d = unconstrained_rational_quadratic_spline(
            x,
            self.unnormalized_widths.to(x.dtype).expand(shape),
            self.unnormalized_heights.to(x.dtype).expand(shape),
            self.unnormalized_derivatives.to(x.dtype).expand(shape),
            inverse=inverse,
            tails="linear",
            tail_bound=self.tail_bound,
            min_bin_width=DEFAULT_MIN_BIN_WIDTH,
            min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
            min_derivative=DEFAULT_MIN_DERIVATIVE,
        )
        return y, log_d

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, log_d = self._spline(x, inverse=False)
        return z, log_d.flatten(1).sum(1)

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return self._spline(z, inverse=True)[0]
