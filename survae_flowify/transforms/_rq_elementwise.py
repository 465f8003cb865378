r"""A monotonic rational-quadratic spline whose knots differ from entry to entry.

The coupling and autoregressive layers predict one spline per transformed entry, so nothing can
be shared between entries as in :mod:`survae_flowify.transforms._rq_kernel`. This module computes
nflows' ``unconstrained_rational_quadratic_spline(..., tails="linear")`` (Durkan et al., 2019,
"Neural Spline Flows", §3.1 and appendix A) with the same parametrisation and defaults:

* for every entry, ``K`` widths and heights from a softmax over its last axis, floored at
  ``min_bin_width`` / ``min_bin_height`` and scaled to ``[−B, B]``; knots ``x_k``, ``y_k`` are
  their cumulative sums with the end knots pinned to ``±B``;
* ``K − 1`` inner knot derivatives ``d_k = min_derivative + softplus(·)``; the two boundary ones
  are 1, so the identity tails join with a continuous derivative;
* in bin ``k`` with ``w_k = x_{k+1} − x_k``, ``h_k = y_{k+1} − y_k``, ``δ_k = h_k / w_k``,
  ``s_k = d_k + d_{k+1} − 2δ_k`` and ``θ = (x − x_k) / w_k``:

  $$ g(x) = y_k + \frac{h_k\,[δ_k θ^2 + d_k θ(1 − θ)]}{δ_k + s_k θ(1 − θ)}, \qquad
     g'(x) = \frac{δ_k^2\,[d_{k+1} θ^2 + 2δ_k θ(1 − θ) + d_k (1 − θ)^2]}{(δ_k + s_k θ(1 − θ))^2}. $$

The inverse takes the stable root ``θ = 2c / (−b − \sqrt{b^2 − 4ac})`` of the bin's quadratic
(``u = y − y_k``, ``a = s_k u + h_k(δ_k − d_k)``, ``b = h_k d_k − s_k u``, ``c = −δ_k u``).

How it stays fast: the work is laid out with the bin axis first, ``(K, ...)``, so that the
softmax, the cumulative sums and the padding run over ``K`` rows of contiguous entries instead of
along a short last axis (PyTorch's CPU kernels are several times slower there);
:func:`rq_elementwise_bins_first` takes parameters in that layout (the couplings' networks emit
it, so no copy is made), :func:`rq_elementwise` takes nflows' ``(..., K)`` layout and moves the
axis. The bin is a comparison-sum over the ``K − 1`` inner knots (no binary search, no
boolean-mask indexing); the bin's two knots ``x_k, x_{k+1}`` are one gather, and so are
``y_k, y_{k+1}`` and ``d_k, d_{k+1}``. The tails are a ``torch.where`` over the spline evaluated at the input
clamped to ``[−B, B]`` (the clamped value keeps the masked-out branch finite, so its zero gradient
is not a NaN). As in nflows, ``[−B, B]`` is closed: entries exactly at ``±B`` go through the
spline.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from survae_flowify.transforms._rq_kernel import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
)

__all__ = ["identity_derivative_logit", "rq_elementwise", "rq_elementwise_bins_first"]


def identity_derivative_logit(min_derivative: float = DEFAULT_MIN_DERIVATIVE) -> float:
    """The unnormalised derivative whose knot derivative is exactly 1: ``softplus⁻¹(1 − min_d)``.

    With uniform widths and heights and every inner derivative at this value, the spline is the
    identity; networks add it to their raw output so a zero-initialised last layer starts there.
    """
    return math.log(math.expm1(1 - min_derivative))


def _knots(unnormalized: Tensor, bound: float, min_size: float) -> Tensor:
    """Knot positions ``(K + 1, ...)`` on ``[−B, B]`` from ``(K, ...)``, computed as nflows does."""
    num_bins = unnormalized.shape[0]
    sizes = min_size + (1 - min_size * num_bins) * F.softmax(unnormalized, dim=0)
    inner = 2 * bound * torch.cumsum(sizes[:-1], dim=0) - bound
    end = inner.new_full((1, *inner.shape[1:]), bound)
    return torch.cat([-end, inner, end], dim=0)


def _derivatives(unnormalized: Tensor, min_derivative: float) -> Tensor:
    """Knot derivatives ``(K + 1, ...)`` from ``(K − 1, ...)``, the two boundary ones equal to 1."""
    boundary = unnormalized.new_full((1, *unnormalized.shape[1:]), 1.0)
    return torch.cat([boundary, min_derivative + F.softplus(unnormalized), boundary], dim=0)


def _at(table: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Rows ``k`` and ``k + 1`` of a ``(K + 1, ...)`` table for the bin ``k`` of every entry.

    One gather for both (its backward zero-fills the table once, not twice).
    """
    both = table.gather(0, torch.stack([index, index + 1]))
    return both[0], both[1]


def _log_derivative(delta: Tensor, d0: Tensor, d1: Tensor, theta: Tensor, den: Tensor) -> Tensor:
    """``log g'`` in bin coordinates (the formula of the module docstring)."""
    one_minus = 1 - theta
    num = d1 * theta * theta + 2 * delta * theta * one_minus + d0 * one_minus * one_minus
    return torch.log(delta * delta * num) - 2 * torch.log(den)


def rq_elementwise(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    inverse: bool = False,
    tail_bound: float = 1.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    r"""Apply every entry's own spline ``g`` (or ``g^{-1}``) to it.

    Shapes: ``inputs`` ``(...)``, widths and heights ``(..., K)``, derivatives ``(..., K − 1)``.
    Returns ``(outputs, log_abs_det)``, both ``(...)``: ``g(x)`` and ``log g'(x)`` forward,
    ``g^{-1}(y)`` and ``−log g'(g^{-1}(y))`` inverse; the identity (log-derivative 0) outside
    ``[−B, B]``. The same function, conventions and defaults as nflows'
    ``unconstrained_rational_quadratic_spline(..., tails="linear")``.
    """
    return rq_elementwise_bins_first(
        inputs, unnormalized_widths.movedim(-1, 0), unnormalized_heights.movedim(-1, 0),
        unnormalized_derivatives.movedim(-1, 0), inverse=inverse, tail_bound=tail_bound,
        min_bin_width=min_bin_width, min_bin_height=min_bin_height, min_derivative=min_derivative,
    )


def rq_elementwise_bins_first(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    inverse: bool = False,
    tail_bound: float = 1.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """:func:`rq_elementwise` with the bin axis first: parameters ``(K, ...)`` and ``(K − 1, ...)``."""
    num_bins = unnormalized_widths.shape[0]
    if min_bin_width * num_bins > 1.0 or min_bin_height * num_bins > 1.0:
        raise ValueError(
            f"rq_elementwise: {num_bins} bins of minimal width {min_bin_width} and height "
            f"{min_bin_height} do not fit in [−B, B]: need num_bins · minimum ≤ 1"
        )
    bound = float(tail_bound)
    cw = _knots(unnormalized_widths, bound, min_bin_width)
    ch = _knots(unnormalized_heights, bound, min_bin_height)
    d = _derivatives(unnormalized_derivatives, min_derivative)
    inside = (inputs >= -bound) & (inputs <= bound)
    t = inputs.clamp(-bound, bound)
    # k = #{inner knots ≤ t}, so t = B is in the last bin, as in nflows.
    k = (t.unsqueeze(0) >= (ch if inverse else cw)[1:-1]).sum(0)
    (x0, x1), (y0, y1), (d0, d1) = _at(cw, k), _at(ch, k), _at(d, k)
    out, log_det = (_inverse if inverse else _forward)(t, x0, x1 - x0, y0, y1 - y0, d0, d1)
    return torch.where(inside, out, inputs), torch.where(inside, log_det, log_det.new_zeros(()))


def _forward(x: Tensor, x0: Tensor, w: Tensor, y0: Tensor, h: Tensor, d0: Tensor,
             d1: Tensor) -> tuple[Tensor, Tensor]:
    """``g(x)`` and ``log g'(x)`` in the bin whose quantities are given."""
    delta = h / w
    s = d0 + d1 - 2 * delta
    theta = (x - x0) / w
    tt = theta * (1 - theta)
    den = delta + s * tt
    out = y0 + h * (delta * theta * theta + d0 * tt) / den
    return out, _log_derivative(delta, d0, d1, theta, den)


def _inverse(y: Tensor, x0: Tensor, w: Tensor, y0: Tensor, h: Tensor, d0: Tensor,
             d1: Tensor) -> tuple[Tensor, Tensor]:
    """``g^{-1}(y)`` (the stable root of the bin's quadratic) and ``−log g'`` there."""
    delta = h / w
    s = d0 + d1 - 2 * delta
    u = y - y0
    a = s * u + h * (delta - d0)
    b = h * d0 - s * u
    c = -delta * u
    disc = (b * b - 4 * a * c).clamp_min(0)  # ≥ 0 up to rounding
    theta = 2 * c / (-b - torch.sqrt(disc))
    den = delta + s * theta * (1 - theta)
    return x0 + theta * w, -_log_derivative(delta, d0, d1, theta, den)
