r"""A fast monotonic rational-quadratic spline whose knots are shared by every entry.

The function is nflows' ``unconstrained_rational_quadratic_spline`` with linear tails
(Durkan et al., 2019, "Neural Spline Flows", §3.1 and appendix A), restricted to the case the
flowified activations need: one spline for the whole tensor. Because the ``K`` bins are shared,
everything that depends on the parameters alone is computed once per call, in ``O(K + M)``
(:func:`rq_tables`, ``M`` the grid's cells), with autograd:

* widths ``w_k`` and heights ``h_k`` from a softmax, floored at ``min_bin_width`` /
  ``min_bin_height`` and scaled to ``[−B, B]``; knots ``x_k`` and ``y_k`` are their cumulative
  sums, with the end knots pinned to ``±B`` (exactly as nflows does);
* knot derivatives ``d_k = min_derivative + softplus(·)``, the two boundary ones equal to 1 so
  the identity tails join with a continuous derivative;
* a table of seven numbers per bin forward (below) and six inverse,
  ``(y_k, 1/h_k, x_k, w_k, d_k, d_{k+1})``, plus two tail columns for which the formulas are
  exactly the identity (no masks, no ``torch.where``);
* a lookup table over a uniform grid of ``[−B, B]`` that locates an input's bin in ``O(1)``
  (:func:`_locate`), and the table spread over the grid's ``2(M+2)`` columns (two per cell:
  below and above the cell's knot, if any), so an entry's coefficients are one gather away from
  its grid cell.

Per entry, with ``δ = h_k/w_k``, ``s = d_k + d_{k+1} − 2δ``, ``e = δ − d_k`` and
``θ = (x − x_k)/w_k`` in the entry's bin, Durkan et al.'s eq. 4 and its derivative are

$$ g(x) = y_k + h_k\,\frac{θ\,(eθ + d_k)}{δ + sθ(1 − θ)}, \qquad
   g'(x) = \frac{δ^2 (sθ^2 + 2eθ + d_k)}{(δ + sθ(1 − θ))^2}. $$

Dividing the numerator and the denominator of ``g`` by ``δ`` (and so that of ``g'`` by ``δ²``)
makes both rational functions of ``t = x − x_k`` with per-bin coefficients from the ``O(K)`` table,

$$ g(x) = y_k + \frac{N}{D}, \quad N = t\,(a_0 + a_1 t), \quad D = 1 + t\,(b_1 + b_2 t), \qquad
   \log g'(x) = \log\frac{R}{D^2}, \quad R = a_0 + 2a_1 t + c_2 t^2, $$

with ``a₀ = d_k``, ``a₁ = e/w_k``, ``b₁ = s/h_k``, ``b₂ = −s/(h_k w_k)``, ``c₂ = s/w_k²``
(with ``θ = t/w_k`` and ``δw_k = h_k``: ``h_kθ(eθ + d_k)/δ = t(d_k + (e/w_k)t)``,
``1 + (s/δ)θ(1−θ) = 1 + (s/h_k)t(1 − t/w_k)`` and ``sθ² + 2eθ + d_k = d_k + 2(e/w_k)t +
(s/w_k²)t²``; ``c₂ = a₁b₁ − a₀b₂``, kept in the table so that no entry recomputes it). The
forward columns are ``(x_k, a₀, a₁, b₁, b₂, c₂, y_k)``, ``y_k`` last because the backward
gathers only the first six. The identity columns are ``x_k = y_k = 0``, ``a₀ = 1``, the rest 0:
``g(x) = x`` and ``log g' = log 1 = 0`` exactly, and the Horner forms never form ``t²``, which
could overflow in the tails. Per entry this is eleven elementwise passes (the form in ``θ`` took
eighteen) after the grid lookup and one seven-row gather; in float32 it is as close to nflows
in float64 as nflows in float32 is, narrow bins and inputs next to the knots included.

The forward direction is a :class:`torch.autograd.Function` (:class:`_SharedSpline`) whose
backward is written out by hand: with ``ḡ`` and ``ℓ̄`` the incoming gradients of ``g`` and
``log g'``, the derivatives with respect to ``x`` and to the seven coefficients are a few base
quantities (``ḡ``, ``ḡ/D``, ``ℓ̄/R``, ``∂/∂D``) times powers of ``t`` (:func:`_backward_terms`),
about twenty-five fused elementwise operations on intermediates recomputed from ``x`` and its
saved column (``int16``: 2 bytes per entry, where the bin as ``int64`` took 8); each of the seven
per-entry results is reduced over the entries of a column with one ``scatter_add_``. The
gradient then goes through the gather of the columns (autograd's scatter-add) and the ``O(K)``
table (autograd) to the unnormalised parameters. The per-entry backward is first order only:
asking for a second derivative (``create_graph=True``) raises an error that names the way out
(``RqSpline(backend="autograd")`` evaluates the same formulas with autograd, differentiable to
any order).

On a CPU (float32 or float64, outside ``torch.compile`` tracing, with a C compiler) the forward
direction runs instead in C (:mod:`survae_flowify.transforms._rq_native`): the same tables, built
in float64 and rounded once, the same per-entry formulas in one vectorised pass each way, and the
``O(K)`` chain rule to the parameters written out; :func:`rq_spline` and
:class:`~survae_flowify.RqSpline` choose it where it applies (:func:`rq_native_forward`). This
module's torch operations are the kernel everywhere else, and its tests run with both.

The inverse is not on a training path (sampling): it evaluates with plain autograd, solving the
bin's quadratic ``a θ^2 + b θ + c = 0`` as nflows does, with the numerically stable root
``θ = 2c / (−b − \sqrt{b^2 − 4ac})`` (Durkan et al., appendix A), ``u = y − y_k``,
``a = s u + h_k e``, ``b = h_k d_k − s u``, ``c = −δ u``.

As in nflows, ``[−B, B]`` is closed: inputs exactly at ``±B`` go through the spline (whose value
and derivative agree there with the tails', but not the derivative of ``log g'``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from survae_flowify.transforms import _rq_native

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
# Bytes per tensor of one chunk of entries on a CPU (see _chunks).
_CHUNK_BYTES = 1 << 18
# The tail columns of the tables, for which the formulas are exactly g(x) = x and log g' = 0:
# forward x_k = y_k = 0, a₀ = 1, a₁ = b₁ = b₂ = c₂ = 0; inverse y_k = x_k = 0, 1/h = w = d = 1.
_FORWARD_IDENTITY = (0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0)
_INVERSE_IDENTITY = (0.0, 1.0, 0.0, 1.0, 1.0, 1.0)


class RqTables(NamedTuple):
    """Everything one direction of the spline needs that depends on the parameters alone.

    ``knots``: ``(K+1,)`` bin edges on the input side (``x_k`` forward, ``y_k`` inverse), the last
    one moved up by one ulp so that the right tail is ``x > B``.
    ``coefficients``: ``(R, K+2)``, one column per bin, the first and last the identity tails
    (``R = 7`` forward, ``6`` inverse).
    ``columns``: ``(R, C)``, the table :func:`_locate` indexes: ``coefficients[:, bins]``.
    ``bins``: ``(C,)`` (``int64``), the bin of each column of ``columns``.
    ``ahead``: ``(M+2,)`` lookup table of :func:`_locate` in the knots' dtype (empty when
    ``cells == 0``, where ``columns`` is ``coefficients`` and :func:`_locate` a binary search).
    """

    knots: Tensor
    coefficients: Tensor
    columns: Tensor
    bins: Tensor
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


def grid_cells(min_size: float) -> int:
    """The lookup grid's cell count ``M = ⌈2 / min_size⌉`` (:func:`_lookup`), 0 where the grid
    would be finer than ``_MAX_CELLS`` (the binary search instead)."""
    cells = math.ceil(2 / min_size) if min_size > 0 else 0
    return cells if 0 < cells <= _MAX_CELLS else 0


def _lookup(knots: Tensor, bound: float, min_size: float) -> tuple[Tensor, Tensor, int]:
    r"""The grid of :func:`_locate`: ``M = ⌈2 / min_size⌉`` cells of width ``c = 2B/M`` on
    ``[−B, B]``, plus cell 0 for ``x < −B`` and cell ``M+1`` for ``x ≥ B``.

    Knots are at least ``2B·min_size ≥ 2c`` apart, so a cell widened by ``c/4`` on each side
    holds at most one knot. With ``n_i`` the number of knots under widened cell ``i``, the
    entries of cell ``i`` lie in bin ``n_i`` below its knot ``ahead[i]`` (``+∞`` if none) and in
    bin ``n_i + 1`` from it on: column ``2i + [x ≥ ahead[i]]`` of the table is that bin's, so
    ``bins[2i + b] = n_i + b`` (clamped to the right tail, which no ``x < +∞`` passes). Returns
    ``(ahead, bins, M)``. Half precision rounds too coarsely for the grid: it (and a grid finer
    than ``_MAX_CELLS``) falls back to ``torch.searchsorted`` (``M = 0``, ``bins`` the identity).
    """
    num_bins = knots.shape[0] - 1
    cells = grid_cells(min_size)
    if cells == 0 or knots.element_size() < 4:
        return knots.new_empty(0), torch.arange(num_bins + 2, device=knots.device), 0
    knots = knots.detach()
    width = 2 * bound / cells
    # Widened lower cell edges; cell 0's (−B − 5c/4) is below every knot, as −∞ would be.
    lower = torch.arange(-1, cells + 1, device=knots.device, dtype=knots.dtype) * width - (bound + width / 4)
    below = torch.searchsorted(knots, lower, right=True)
    ahead = F.pad(knots, (0, 1), value=math.inf).index_select(0, below)
    bins = torch.stack([below, below + 1], dim=1).flatten().clamp_max_(num_bins + 1)
    return ahead, bins, cells


def _forward_coefficients(cw: Tensor, w: Tensor, ch: Tensor, h: Tensor, d: Tensor) -> Tensor:
    """``(7, K)``: ``x_k, a₀ = d_k, a₁ = e/w, b₁ = s/h, b₂ = −s/(hw), c₂ = s/w², y_k`` per bin."""
    delta = h / w
    s = d[:-1] + d[1:] - 2 * delta
    return torch.stack([cw[:-1], d[:-1], (delta - d[:-1]) / w, s / h, -s / (h * w), s / (w * w), ch[:-1]])


def _check_bins(num_bins: int, min_bin_width: float, min_bin_height: float) -> None:
    if min_bin_width * num_bins > 1.0 or min_bin_height * num_bins > 1.0:
        raise ValueError(
            f"rq_tables: {num_bins} bins of minimal width {min_bin_width} and height "
            f"{min_bin_height} do not fit in [−B, B]: need num_bins · minimum ≤ 1"
        )


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
    """The ``O(K + M)`` part of one direction, from parameters of shapes ``(K,)``, ``(K,)``, ``(K−1,)``.

    Differentiable in the parameters (through ``coefficients`` and ``columns``, with autograd, to
    any order); build it in the inputs' dtype. A hand-written backward of this part saved 0.11 ms
    of its 0.84 ms a call (one thread), under 1 % of an FMLP step, and is not used.
    """
    _check_bins(unnormalized_widths.shape[-1], min_bin_width, min_bin_height)
    cw, w = _knots(unnormalized_widths, tail_bound, min_bin_width)
    ch, h = _knots(unnormalized_heights, tail_bound, min_bin_height)
    d = _derivatives(unnormalized_derivatives, min_derivative)
    if inverse:
        knots, min_size, identity = ch, min_bin_height, _INVERSE_IDENTITY
        body = torch.stack([ch[:-1], 1 / h, cw[:-1], w, d[:-1], d[1:]])
    else:
        knots, min_size, identity = cw, min_bin_width, _FORWARD_IDENTITY
        body = _forward_coefficients(cw, w, ch, h, d)
    tail = body.new_tensor(identity).unsqueeze(1)
    table = torch.cat([tail, body, tail], dim=1)
    # The right tail starts just above B, so x = B stays in the last bin, as in nflows.
    knots = torch.cat([knots[:-1], knots[-1:].nextafter(knots.new_full((1,), math.inf))]).detach()
    ahead, bins, cells = _lookup(knots, tail_bound, min_size)
    # A gather, not index_select: its backward is one scatter-add (index_select's, index_add_
    # along dim 1, is several times slower on a CPU).
    columns = table.gather(1, bins.expand(table.shape[0], -1)) if cells else table
    return RqTables(knots, table, columns, bins, ahead, float(tail_bound), cells, inverse)


def _locate(flat: Tensor, tables: RqTables) -> Tensor:
    r"""Column of ``tables.columns`` for every entry: its bin ``#{j : t_j ≤ x}`` in ``[0, K+1]``
    (0 and ``K+1`` the tails) is ``tables.bins[column]``.

    Replaces ``torch.searchsorted(knots, x, right=True)``, a binary search per entry that
    dominates on a CPU: with ``i`` the grid cell of ``x`` (its rounding error is far below the
    ``c/4`` widening of :func:`_lookup`), the column is ``2i + [x ≥ ahead[i]]``, one gather and
    a few float passes. The comparison is written into a float tensor: PyTorch's boolean and
    integer comparison outputs take several times longer on a CPU; the one conversion is to
    ``int32`` (about a third of the cost of ``int64``), which ``index_select`` takes. NaN inputs
    land in cell 0, column 0 (the identity tail) and stay NaN in the output.
    """
    flat = flat.detach()
    if tables.cells == 0:
        return torch.searchsorted(tables.knots, flat, right=True)
    bound, cells = tables.bound, tables.cells
    width = 2 * bound / cells
    cell = torch.mul(flat, 1 / width).add_((bound + width) / width).nan_to_num_(0.0)
    cell = cell.clamp_(0, cells + 1).floor_()
    ahead = tables.ahead.index_select(0, cell.to(torch.int32))
    return torch.ge(flat, ahead, out=ahead).add_(cell, alpha=2).to(torch.int32)


def _index_dtype(columns: int) -> torch.dtype:
    """The smallest signed integer type that holds a column index: what the backward keeps."""
    return torch.int16 if columns <= torch.iinfo(torch.int16).max else torch.int32


def _forward_autograd(x: Tensor, xk: Tensor, a0: Tensor, a1: Tensor, b1: Tensor, b2: Tensor,
                      c2: Tensor, yk: Tensor) -> tuple[Tensor, Tensor]:
    """The forward formulas of the module docstring, differentiated by autograd (any order)."""
    t = x - xk
    den = 1 + t * (b1 + b2 * t)
    r = a0 + 2 * t * (a1 + 0.5 * c2 * t)
    return yk + t * (a0 + a1 * t) / den, torch.log(r / (den * den))


def _chunks(x: Tensor) -> list[slice]:
    """Slices of ``x`` (flat) small enough that one chunk's intermediates stay in cache.

    On a CPU the per-entry work is a few dozen elementwise passes; on whole 256×512 tensors
    they run from the shared L3 cache or memory. Chunks of 256 KiB per tensor keep more of them
    in a core's L2 (1 MiB here): forward and backward of the 256×512 float32 kernel took a
    median 0.75× the time of whole tensors on one thread (a loaded 2-core EPYC, CPU time, 40
    interleaved rounds; the forward alone is unchanged), and 0.73× again with the rational form
    (25 rounds; chunks of 64–256 KiB alike, 32 KiB slower).
    Elsewhere (CUDA) and under ``torch.compile``: one chunk.
    """
    n = x.shape[0]
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return [slice(0, n)]
    size = max(_CHUNK_BYTES // x.element_size(), 1)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class _SharedSpline(torch.autograd.Function):
    """``(g(x), log g'(x))`` for flat entries ``x`` ``(N,)`` through the ``(7, C)`` table
    ``columns`` (``tables.columns``, or any table of that shape: what the gradient is taken
    with respect to), with the closed-form first derivative described in the module docstring.

    Per entry the backward keeps only ``x`` and its column (as ``int16`` for the grid of the
    default minimum bin size: 2 bytes instead of the 8 of an ``int64`` bin); it gathers the
    coefficients again and recomputes the intermediates chunk by chunk (in cache), which costs
    less than writing them out and reading them back.
    """

    @staticmethod
    def forward(ctx, x: Tensor, columns: Tensor, tables: RqTables) -> tuple[Tensor, Tensor]:
        out, log_det = torch.empty_like(x), torch.empty_like(x)
        saved = torch.empty(x.shape, dtype=_index_dtype(columns.shape[1]), device=x.device)
        one = x.new_ones(())
        for part in _chunks(x):
            col = _locate(x[part], tables)
            saved[part] = col
            xk, a0, a1, b1, b2, c2, yk = columns.index_select(1, col).unbind(0)
            t = torch.sub(x[part], xk, out=xk)
            num = torch.addcmul(a0, a1, t).mul_(t)
            den = torch.addcmul(one, torch.addcmul(b1, b2, t, out=b1), t)
            torch.addcdiv(yk, num, den, out=out[part])
            r = torch.addcmul(a0, torch.addcmul(a1, c2, t, value=0.5, out=c2), t, value=2, out=a0)
            torch.log(r.div_(den.mul_(den)), out=log_det[part])
        ctx.save_for_backward(x, columns, saved)
        return out, log_det

    @staticmethod
    def backward(ctx, grad_out: Tensor, grad_log: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "RqSpline: the fast spline kernel has a closed-form first derivative only; for "
                "second derivatives (create_graph=True) use RqSpline(backend='autograd')"
            )
        x, columns, saved = ctx.saved_tensors
        # Incoming gradients of sums are expanded (stride 0): strided operands take a CPU's
        # elementwise kernels off their vectorised path, so materialise them once.
        grad_out, grad_log = grad_out.contiguous(), grad_log.contiguous()
        grad_x = torch.empty_like(x)
        grad_columns = torch.zeros_like(columns) if ctx.needs_input_grad[1] else None
        one = x.new_ones(())
        for part in _chunks(x):
            col = saved[part].long()  # scatter_add_ takes int64 only
            coefficients = columns[:6].index_select(1, col).unbind(0)  # y_k is not needed
            stats = _backward_terms(x[part], grad_out[part], grad_log[part], *coefficients, one=one,
                                    parameters=grad_columns is not None, grad_x=grad_x[part])
            if grad_columns is not None:
                # The shared knots' gradient: one scatter-add per coefficient.
                for row, stat in zip(grad_columns, stats, strict=True):
                    row.scatter_add_(0, col, stat)
        if grad_columns is not None:
            # Constant factors the per-entry terms leave out (see _backward_terms).
            factors = grad_columns.new_tensor([-1.0, 1.0, 1.0, -2.0, -2.0, 1.0, 1.0])
            grad_columns.mul_(factors.unsqueeze(1))
        return grad_x, grad_columns, None


def _backward_terms(
    x: Tensor, g_out: Tensor, g_log: Tensor, xk: Tensor, a0: Tensor, a1: Tensor,
    b1: Tensor, b2: Tensor, c2: Tensor, *, one: Tensor, parameters: bool, grad_x: Tensor,
) -> tuple[Tensor, ...]:
    """Per entry, the derivatives of ``ḡ·g + ℓ̄·log g'`` with respect to ``x`` (written into
    ``grad_x``) and, with ``parameters``, to the bin's ``x_k, a₀, a₁, b₁, b₂, c₂, y_k``, that of
    ``x_k`` up to a factor −1 and those of ``b₁, b₂`` up to −2 (applied once per column by the
    caller). Overwrites the coefficient tensors (fresh from a gather).

    With ``t = x − x_k``, ``N = t(a₀ + a₁t)``, ``D = 1 + t(b₁ + b₂t)``, ``R = a₀ + 2a₁t + c₂t²``,
    ``g = y_k + N/D`` and ``log g' = log R − 2 log D``: ``∂/∂N = u = ḡ/D``, ``∂/∂R = v = ℓ̄/R``,
    ``∂/∂D = −2P`` with ``P = (ℓ̄ + ½ḡ·N/D)/D``; ``∂/∂t = u(a₀ + 2a₁t) − 2P(b₁ + 2b₂t) +
    2v(a₁ + c₂t)``, and the coefficients' ``N, D, R``-derivatives are powers of ``t``: ``a₀: ut + v``,
    ``a₁: ut² + 2vt``, ``b₁: −2Pt``, ``b₂: −2Pt²``, ``c₂: vt²``, ``y_k: ḡ``, ``x_k: −∂/∂t``.
    """
    t = torch.sub(x, xk, out=xk)
    inner = torch.addcmul(a0, a1, t)  # a₀ + a₁t
    slope = torch.addcmul(b1, b2, t)  # b₁ + b₂t
    den = torch.addcmul(one, slope, t)
    m = torch.mul(inner, t).div_(den)  # N/D
    r = torch.addcmul(a0, torch.addcmul(a1, c2, t, value=0.5), t, value=2)
    u = g_out / den
    v = torch.div(g_log, r, out=r)
    p = torch.addcmul(g_log, g_out, m, value=0.5, out=m).div_(den)
    gx = torch.addcmul(inner, a1, t, out=grad_x).mul_(u)
    gx.addcmul_(p, torch.addcmul(slope, b2, t, out=slope), value=-2)
    gx.addcmul_(v, torch.addcmul(a1, c2, t, out=den), value=2)
    if not parameters:
        return ()
    g_a0 = torch.addcmul(v, u, t, out=inner)
    g_a1 = torch.add(g_a0, v, out=u).mul_(t)
    g_b1 = p.mul_(t)
    g_b2 = torch.mul(g_b1, t, out=slope)
    g_c2 = v.mul_(t).mul_(t)
    return gx, g_a0, g_a1, g_b1, g_b2, g_c2, g_out


def _inverse(y: Tensor, yk: Tensor, inv_h: Tensor, xk: Tensor, w: Tensor, d0: Tensor,
             d1: Tensor) -> tuple[Tensor, Tensor]:
    """``g^{-1}(y)`` (the stable root of the bin's quadratic) and ``−log g'`` there (autograd)."""
    h = 1 / inv_h
    delta = h / w
    s = d0 + d1 - 2 * delta
    e = delta - d0
    u = y - yk
    qa = torch.addcmul(h * e, s, u)
    qb = torch.addcmul(h * d0, s, u, value=-1)
    m = 2 * delta * u  # −2c
    disc = torch.addcmul(qb * qb, qa, m, value=2).clamp_min(0)  # b² − 4ac ≥ 0 up to rounding
    theta = m / (qb + torch.sqrt(disc))
    den = torch.addcmul(delta, torch.addcmul(s, s, theta, value=-1), theta)
    big_r = torch.addcmul(d0, torch.addcmul(e, s, theta, value=0.5), theta, value=2)
    q = den / delta
    return torch.addcmul(xk, theta, w), torch.log(q * q / big_r)


def _per_entry(inputs: Tensor, fn: Callable[[Tensor], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """``fn`` on the entries of ``inputs`` flattened in memory order, its two results reshaped back."""
    order = _memory_order(inputs)
    flat = inputs.permute(order).reshape(-1)  # a view when the strides are a permutation's
    out, log_det = fn(flat)
    shape = [inputs.shape[d] for d in order]
    back = sorted(range(len(order)), key=order.__getitem__)
    return out.view(shape).permute(back), log_det.view(shape).permute(back)


def rq_apply(inputs: Tensor, tables: RqTables, *, closed_form: bool = True) -> tuple[Tensor, Tensor]:
    """The per-entry part in PyTorch: ``(outputs, log_abs_det)``, both of the input's shape.

    Forward with ``closed_form`` (the default): :class:`_SharedSpline`, first derivatives only.
    Otherwise, and for the inverse, the same formulas through autograd (any order).
    """

    def apply(flat: Tensor) -> tuple[Tensor, Tensor]:
        if closed_form and not tables.inverse:
            return _SharedSpline.apply(flat, tables.columns, tables)
        # A gather: autograd's backward of index_select along dim 1 (index_add_) is several
        # times slower than gather's (scatter_add_) on a CPU.
        col = _locate(flat, tables).long()
        columns = tables.columns.gather(1, col.expand(tables.columns.shape[0], -1)).unbind(0)
        return (_inverse if tables.inverse else _forward_autograd)(flat, *columns)

    return _per_entry(inputs, apply)


def rq_native_forward(
    inputs: Tensor, params: Sequence[Tensor], *, tail_bound: float,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH, min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor] | None:
    """The forward direction with tables, loops and backward in C (:mod:`._rq_native`), or
    ``None`` where the C kernel does not apply (:func:`survae_flowify.transforms._rq_native.usable`)."""
    cells = grid_cells(min_bin_width)
    if not _rq_native.usable(inputs, params, cells):
        return None
    _check_bins(params[0].shape[-1], min_bin_width, min_bin_height)
    settings = _rq_native.Settings(float(tail_bound), min_bin_width, min_bin_height, min_derivative, cells)
    return _per_entry(inputs, lambda x: _rq_native.NativeSpline.apply(x.contiguous(), *params, settings))


def _memory_order(x: Tensor) -> list[int]:
    """Dimensions of ``x`` from the outermost in memory to the innermost, when ``x`` is a
    permutation of a contiguous tensor (a channels-last map, a transposed matrix); else the
    logical order. Working in memory order makes flattening a view: the copy ``reshape(-1)``
    makes of a channels-last map cost ~8 ms of FCONV1-MNIST's eval ``log_prob`` (batch 256)."""
    logical = list(range(x.dim()))
    if x.is_contiguous():
        return logical
    order = sorted(logical, key=lambda d: (-x.stride(d), d))
    return order if x.permute(order).is_contiguous() else logical


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
    closed_form: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""Apply the shared spline ``g`` (or ``g^{-1}``) to every entry of ``inputs``.

    Returns ``(outputs, log_abs_det)``, both of the input's shape: ``g(x)`` and ``log g'(x)``
    forward, ``g^{-1}(y)`` and ``log (g^{-1})'(y) = −log g'(g^{-1}(y))`` inverse; the identity
    (log-derivative 0) outside ``[−B, B]``. Same function, conventions and defaults as nflows'
    ``unconstrained_rational_quadratic_spline(..., tails="linear")`` with the parameters
    ``(K,)``, ``(K,)``, ``(K−1,)`` broadcast to every entry. ``closed_form=False`` differentiates
    the forward with autograd (second derivatives) instead of the hand-written backward.
    """
    params = (unnormalized_widths, unnormalized_heights, unnormalized_derivatives)
    if closed_form and not inverse:
        native = rq_native_forward(inputs, params, tail_bound=tail_bound, min_bin_width=min_bin_width,
                                   min_bin_height=min_bin_height, min_derivative=min_derivative)
        if native is not None:
            return native
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
    return rq_apply(inputs, tables, closed_form=closed_form)
