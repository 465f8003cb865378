r"""The elementwise maps that couplings and autoregressive layers apply with predicted parameters.

Each map takes ``x`` of shape ``(...)`` and raw network outputs ``(P, ...)`` (the parameter axis
first: the networks emit it that way, and the spline kernel works fastest in that layout) and
returns ``(output, log|∂output/∂x|)``, both ``(...)``. A raw output of zero is the identity, so a network
whose last layer starts at zero makes its layer start as the identity.
"""

from __future__ import annotations

import torch
from torch import Tensor

from survae_flowify.transforms._rq_elementwise import identity_derivative_logit, rq_elementwise_bins_first

__all__ = ["AffineMap", "SplineMap"]

# |log scale| ≤ 3 (a factor e³ ≈ 20 per layer): wide enough for standardised data, and it keeps
# an untrained network from producing exp(50) on the first steps.
MAX_LOG_SCALE = 3.0


class AffineMap:
    r"""``z = x · exp(s) + t`` with a bounded log-scale ``s = S · tanh(ŝ / S)``, ``S = 3``.

    Raw parameters ``(ŝ, t)``, ``P = 2``; ``log|∂z/∂x| = s``; inverse ``x = (z − t) · exp(−s)``.
    """

    num_params = 2

    def __call__(self, x: Tensor, params: Tensor, *, inverse: bool) -> tuple[Tensor, Tensor]:
        raw_scale, shift = params.unbind(0)  # unbind: its backward stacks, no zero-filled copies
        log_scale = MAX_LOG_SCALE * torch.tanh(raw_scale / MAX_LOG_SCALE)
        if inverse:
            return (x - shift) * torch.exp(-log_scale), -log_scale
        return x * torch.exp(log_scale) + shift, log_scale

    def __repr__(self) -> str:
        return "affine"


class SplineMap:
    r"""A rational-quadratic spline per entry on ``[−B, B]``, identity outside (Durkan et al., 2019).

    Raw parameters: ``K`` unnormalised widths, ``K`` heights, ``K − 1`` inner derivatives,
    ``P = 3K − 1``; the derivatives are offset by ``softplus⁻¹(1 − 10⁻³)`` so that zeros give the
    identity. Evaluated by
    :func:`survae_flowify.transforms._rq_elementwise.rq_elementwise_bins_first`.
    """

    def __init__(self, num_bins: int, tail_bound: float) -> None:
        self.num_bins = num_bins
        self.tail_bound = tail_bound
        self.num_params = 3 * num_bins - 1
        self._offset = identity_derivative_logit()

    def __call__(self, x: Tensor, params: Tensor, *, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.num_bins
        # split, not slicing: the backward of a slice zero-fills a copy of all the parameters
        widths, heights, derivatives = params.split([k, k, k - 1], dim=0)
        return rq_elementwise_bins_first(x, widths, heights, derivatives + self._offset,
                                         inverse=inverse, tail_bound=self.tail_bound)

    def __repr__(self) -> str:
        return f"spline(num_bins={self.num_bins}, tail_bound={self.tail_bound})"
