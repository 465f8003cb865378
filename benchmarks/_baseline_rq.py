r"""The shared-knot spline kernel as it was before the closed-form backward (commit 073ea3f of
``survae_flowify/transforms/_rq_kernel.py``, autograd through a gather of ten coefficients per
entry), kept so ``benchmarks/speed.py`` can time the old and the new kernel side by side in one
run. Not used by the library; see that commit for its full docstring.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "DEFAULT_MIN_BIN_HEIGHT",
    "DEFAULT_MIN_BIN_WIDTH",
    "DEFAULT_MIN_DERIVATIVE",
    "RqTables",
    "rq_apply",
    "rq_spline",
    "rq_tables",
]

# nflows' defaults (nflows.transforms.splines.rational_quadratic), kept so the two agree.
DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3

# Above this many grid cells the lookup tables are not worth building: use torch.searchsorted.
_MAX_CELLS = 1 << 16


class RqTables(NamedTuple):
    """Everything one direction of the spline needs that depends on the parameters alone.

    ``knots``: ``(K+1,)`` bin edges on the input side (``x_k`` forward, ``y_k`` inverse), the last
    one moved up by one ulp so that the right tail is ``x > B``.
    ``coefficients``: ``(P, K+2)``, one column per bin, the first and last are the tails.
    ``below``/``ahead``: ``(M+2,)`` lookup tables of :func:`_locate` (empty when ``cells == 0``).
    """

    knots: Tensor
    coefficients: Tensor
    below: Tensor
    ahead: Tensor
    bound: float
    cells: int
    inverse: bool


def _knots(unnormalized: Tensor, bound: float, min_size: float) -> tuple[Tensor, Tensor]:
    """Knot positions ``(K+1,)`` on ``[−B, B]`` and bin sizes ``(K,)``, as nflows computes them."""
    num_bins = unnormalized.shape[-1]
    sizes = min_size + (1 - min_size * num_bins) * F.softmax(unnormalized, dim=-1)
    inner = 2 * bound * torch.cumsum(sizes, dim=-1)[:-1] - bound
    end = unnormalized.new_full((1,), bound)
    knots = torch.cat([-end, inner, end])
    return knots, knots[1:] - knots[:-1]


def _derivatives(unnormalized: Tensor, min_derivative: float) -> Tensor:
    """Knot derivatives ``(K+1,)``; the boundary ones are ``min_d + softplus(softplus⁻¹(1 − min_d)) = 1``."""
    boundary = unnormalized.new_full((1,), math.log(math.expm1(1 - min_derivative)))
    return min_derivative + F.softplus(torch.cat([boundary, unnormalized, boundary]))


def _with_tails(rows: list[Tensor], tail: list[float]) -> Tensor:
    """Stack ``P`` per-bin coefficients ``(K,)`` into a ``(P, K+2)`` table, identity tails at both ends."""
    body = torch.stack(rows)
    end = body.new_tensor(tail).unsqueeze(1)
    return torch.cat([end, body, end], dim=1)


def _lookup(knots: Tensor, bound: float, min_size: float) -> tuple[Tensor, Tensor, int]:
    r"""The grid of :func:`_locate`: ``M = ⌈2 / min_size⌉`` cells of width ``c = 2B/M`` on
    ``[−B, B]``, plus cell 0 for ``x < −B`` and cell ``M+1`` for ``x ≥ B``.

    Knots are at least ``2B·min_size ≥ 2c`` apart, so a cell widened by ``c/4`` on each side
    holds at most one knot. ``below[i]`` counts the knots under widened cell ``i``; ``ahead[i]``
    is the next knot (``+∞`` past the last). Half precision rounds too coarsely for the grid:
    it (and a grid finer than ``_MAX_CELLS``) falls back to ``torch.searchsorted``.
    """
    cells = math.ceil(2 / min_size) if min_size > 0 else _MAX_CELLS + 1
    if cells > _MAX_CELLS or knots.element_size() < 4:
        empty = knots.new_empty(0, dtype=torch.long)
        return empty, knots.new_empty(0), 0
    knots = knots.detach()
    width = 2 * bound / cells
    lower = torch.arange(-1, cells + 1, device=knots.device, dtype=knots.dtype) * width - bound
    lower[0] = -math.inf
    below = torch.searchsorted(knots, lower - width / 4, right=True)
    ahead = torch.cat([knots, knots.new_full((1,), math.inf)]).index_select(0, below)
    return below, ahead, cells


def rq_tables(
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    *,
    tail_bound: float,
    inverse: bool,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> RqTables:
    """The ``O(K)`` part of one direction, from parameters of shapes ``(K,)``, ``(K,)``, ``(K−1,)``.

    Differentiable in the parameters (through ``coefficients``); build it in the inputs' dtype.
    """
    num_bins = unnormalized_widths.shape[-1]
    if min_bin_width * num_bins > 1.0 or min_bin_height * num_bins > 1.0:
        raise ValueError(
            f"rq_tables: {num_bins} bins of minimal width {min_bin_width} and height "
            f"{min_bin_height} do not fit in [−B, B]: need num_bins · minimum ≤ 1"
        )
    cw, w = _knots(unnormalized_widths, tail_bound, min_bin_width)
    ch, h = _knots(unnormalized_heights, tail_bound, min_bin_height)
    d = _derivatives(unnormalized_derivatives, min_derivative)
    d0, d1 = d[:-1], d[1:]
    delta = h / w
    s = d0 + d1 - 2 * delta
    delta2 = delta * delta
    c2, c1, c0 = delta2 * s, 2 * delta2 * (delta - d0), delta2 * d0
    p, q = h * (delta - d0), h * d0
    if inverse:
        knots, min_size = ch, min_bin_height
        rows = [ch[:-1], s, p, q, 2 * delta, delta, w, cw[:-1], c2, c1, c0]
        table = _with_tails(rows, [0.0, 0.0, 0.0, 1.0, 2.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    else:
        knots, min_size = cw, min_bin_width
        rows = [cw[:-1], 1 / w, ch[:-1], p, q, s, delta, c2, c1, c0]
        table = _with_tails(rows, [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    # The right tail starts just above B, so x = B stays in the last bin, as in nflows.
    knots = torch.cat([knots[:-1], knots[-1:].nextafter(knots.new_full((1,), math.inf))]).detach()
    below, ahead, cells = _lookup(knots, tail_bound, min_size)
    return RqTables(knots, table, below, ahead, float(tail_bound), cells, inverse)


def _locate(flat: Tensor, tables: RqTables) -> Tensor:
    r"""Bin of every entry (``int64``): ``#{j : t_j ≤ x}`` in ``[0, K+1]``, 0 and ``K+1`` the tails.

    Equals ``torch.searchsorted(knots, x, right=True)`` without a binary search per entry (which
    dominates on a CPU): with ``i`` the grid cell of ``x`` (its rounding error is far below the
    ``c/4`` widening), ``bin(x) = below[i] + [x ≥ ahead[i]]``. NaN inputs land in cell 0 and
    stay NaN in the output.
    """
    flat = flat.detach()
    if tables.cells == 0:
        return torch.searchsorted(tables.knots, flat, right=True)
    bound, cells = tables.bound, tables.cells
    width = 2 * bound / cells
    cell = (flat + (bound + width)).mul_(1 / width).nan_to_num_(0.0).clamp_(0, cells + 1).long()
    return tables.below.index_select(0, cell) + (flat >= tables.ahead.index_select(0, cell))


def _quadratic(c2: Tensor, c1: Tensor, c0: Tensor, theta: Tensor) -> Tensor:
    """``(c2 θ + c1) θ + c0`` in two fused operations (Horner: no ``θ²`` that could overflow)."""
    return torch.addcmul(c0, torch.addcmul(c1, c2, theta), theta)


def _denominator(s: Tensor, delta: Tensor, theta: Tensor) -> Tensor:
    """``δ + s θ (1 − θ)`` as ``(s − s θ) θ + δ``."""
    return torch.addcmul(delta, torch.addcmul(s, s, theta, value=-1), theta)


def _forward(
    x: Tensor, cw: Tensor, inv_w: Tensor, ch: Tensor, p: Tensor, q: Tensor, s: Tensor,
    delta: Tensor, c2: Tensor, c1: Tensor, c0: Tensor,
) -> tuple[Tensor, Tensor]:
    """``y = y_k + (p θ² + q θ) / den`` and ``log g' = log((c2 θ² + c1 θ + c0) / den²)``."""
    theta = (x - cw) * inv_w
    den = _denominator(s, delta, theta)
    out = torch.addcdiv(ch, torch.addcmul(q, p, theta) * theta, den)
    return out, torch.log(_quadratic(c2, c1, c0, theta) / (den * den))


def _inverse(
    y: Tensor, ch: Tensor, s: Tensor, p: Tensor, q: Tensor, two_delta: Tensor, delta: Tensor,
    w: Tensor, cw: Tensor, c2: Tensor, c1: Tensor, c0: Tensor,
) -> tuple[Tensor, Tensor]:
    """The root ``θ = 2c / (−b − √(b² − 4ac))`` of the bin's quadratic; ``x = x_k + w θ``."""
    u = y - ch
    a = torch.addcmul(p, s, u)
    b = torch.addcmul(q, s, u, value=-1)
    m = two_delta * u  # −2c
    disc = torch.addcmul(b * b, a, m, value=2).clamp_min(0)  # b² − 4ac ≥ 0 up to rounding
    theta = m / (b + torch.sqrt(disc))
    den = _denominator(s, delta, theta)
    log_det = torch.log(den * den / _quadratic(c2, c1, c0, theta))
    return torch.addcmul(cw, theta, w), log_det


def rq_apply(inputs: Tensor, tables: RqTables) -> tuple[Tensor, Tensor]:
    """The per-entry part: ``(outputs, log_abs_det)``, both of the input's shape."""
    flat = inputs.reshape(-1)
    bins = _locate(flat, tables)
    # One gather for all coefficients; unbind so the backward pass stacks instead of zero-filling.
    coefficients = tables.coefficients.index_select(1, bins).unbind(0)
    out, log_det = (_inverse if tables.inverse else _forward)(flat, *coefficients)
    return out.view(inputs.shape), log_det.view(inputs.shape)


def rq_spline(
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
    r"""Apply the shared spline ``g`` (or ``g^{-1}``) to every entry of ``inputs``.

    Returns ``(outputs, log_abs_det)``, both of the input's shape: ``g(x)`` and ``log g'(x)``
    forward, ``g^{-1}(y)`` and ``log (g^{-1})'(y) = −log g'(g^{-1}(y))`` inverse; the identity
    (log-derivative 0) outside ``[−B, B]``. Same function, conventions and defaults as nflows'
    ``unconstrained_rational_quadratic_spline(..., tails="linear")`` with the parameters
    ``(K,)``, ``(K,)``, ``(K−1,)`` broadcast to every entry.
    """
    tables = rq_tables(
        unnormalized_widths.to(inputs.dtype),
        unnormalized_heights.to(inputs.dtype),
        unnormalized_derivatives.to(inputs.dtype),
        tail_bound=tail_bound,
        inverse=inverse,
        min_bin_width=min_bin_width,
        min_bin_height=min_bin_height,
        min_derivative=min_derivative,
    )
    return rq_apply(inputs, tables)
