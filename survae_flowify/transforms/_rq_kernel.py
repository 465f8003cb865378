r"""A fast monotonic rational-quadratic spline whose knots are shared by every entry.

The function is nflows' ``unconstrained_rational_quadratic_spline`` with linear tails
(Durkan et al., 2019, "Neural Spline Flows", §3.1 and appendix A), restricted to the case the
flowified activations need: one spline for the whole tensor. Because the ``K`` bins are shared,
everything that depends on the parameters alone is computed once per call, in ``O(K)``
(:func:`rq_tables`), with autograd:

* widths ``w_k`` and heights ``h_k`` from a softmax, floored at ``min_bin_width`` /
  ``min_bin_height`` and scaled to ``[−B, B]``; knots ``x_k`` and ``y_k`` are their cumulative
  sums, with the end knots pinned to ``±B`` (exactly as nflows does);
* knot derivatives ``d_k = min_derivative + softplus(·)``, the two boundary ones equal to 1 so
  the identity tails join with a continuous derivative;
* a table of six numbers per bin, ``(x_k, 1/w_k, y_k, h_k, d_k, d_{k+1})`` forward and
  ``(y_k, 1/h_k, x_k, w_k, d_k, d_{k+1})`` inverse, plus two tail columns ``(0, 1, 0, 1, 1, 1)``
  for which the formulas below are exactly the identity (no masks, no ``torch.where``);
* two lookup tables over a uniform grid of ``[−B, B]`` that locate an input's bin in ``O(1)``
  (:func:`_locate`).

Per entry, with ``δ = h_k/w_k``, ``s = d_k + d_{k+1} − 2δ``, ``e = δ − d_k`` and
``θ = (x − x_k)/w_k`` in the entry's bin:

$$ g(x) = y_k + h_k\,\frac{θ\,(eθ + d_k)}{D}, \quad D = δ + sθ(1 − θ), \qquad
   \log g'(x) = \log\frac{δ^2 R}{D^2}, \quad R = sθ^2 + 2eθ + d_k, $$

(the numerator of Durkan et al.'s eq. 4 and of their derivative, rearranged as polynomials in
``θ`` so that the tail columns give ``g(x) = x`` and ``log g' = 0`` exactly).

The forward direction is a :class:`torch.autograd.Function` (:class:`_SharedSpline`) whose
backward is written out by hand: with ``ḡ`` and ``ℓ̄`` the incoming gradients of ``g`` and
``log g'``, it forms the derivatives with respect to ``x`` and to the six bin quantities in about
thirty fused elementwise operations on tensors saved by the forward, and reduces each of the six
per-entry results over the entries of a bin with one ``scatter_add_`` into a ``(K+2,)`` row.
Autograd takes it from there through the ``O(K)`` table to the unnormalised parameters. This
replaces the ten-coefficient gather, ~60 recorded operations and a ten-row scatter of the plain
autograd version. The backward is first order only: asking for a second derivative
(``create_graph=True``) raises an error that names the way out (``RqSpline(backend="autograd")``
evaluates the same formulas with autograd, differentiable to any order).

The inverse is not on a training path (sampling): it evaluates with plain autograd, solving the
bin's quadratic ``a θ^2 + b θ + c = 0`` as nflows does, with the numerically stable root
``θ = 2c / (−b − \sqrt{b^2 − 4ac})`` (Durkan et al., appendix A), ``u = y − y_k``,
``a = s u + h_k e``, ``b = h_k d_k − s u``, ``c = −δ u``.

As in nflows, ``[−B, B]`` is closed: inputs exactly at ``±B`` go through the spline (whose value
and derivative agree there with the tails', but not the derivative of ``log g'``).
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
# Bytes per tensor of one chunk of entries on a CPU (see _chunks).
_CHUNK_BYTES = 1 << 18
# The tail columns of the table: x_k = 0, 1/w = 1, y_k = 0, h = 1, d_k = d_{k+1} = 1 is g(x) = x.
_IDENTITY = (0.0, 1.0, 0.0, 1.0, 1.0, 1.0)


class RqTables(NamedTuple):
    """Everything one direction of the spline needs that depends on the parameters alone.

    ``knots``: ``(K+1,)`` bin edges on the input side (``x_k`` forward, ``y_k`` inverse), the last
    one moved up by one ulp so that the right tail is ``x > B``.
    ``coefficients``: ``(6, K+2)``, one column per bin, the first and last the identity tails.
    ``below``/``ahead``: ``(M+2,)`` lookup tables of :func:`_locate`, both in the knots' dtype
    (empty when ``cells == 0``).
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


def _lookup(knots: Tensor, bound: float, min_size: float) -> tuple[Tensor, Tensor, int]:
    r"""The grid of :func:`_locate`: ``M = ⌈2 / min_size⌉`` cells of width ``c = 2B/M`` on
    ``[−B, B]``, plus cell 0 for ``x < −B`` and cell ``M+1`` for ``x ≥ B``.

    Knots are at least ``2B·min_size ≥ 2c`` apart, so a cell widened by ``c/4`` on each side
    holds at most one knot. ``below[i]`` counts the knots under widened cell ``i`` (as a float:
    small integers are exact, and :func:`_locate` adds a float comparison to it); ``ahead[i]``
    is the next knot (``+∞`` past the last). Half precision rounds too coarsely for the grid:
    it (and a grid finer than ``_MAX_CELLS``) falls back to ``torch.searchsorted``.
    """
    cells = math.ceil(2 / min_size) if min_size > 0 else _MAX_CELLS + 1
    if cells > _MAX_CELLS or knots.element_size() < 4:
        return knots.new_empty(0), knots.new_empty(0), 0
    knots = knots.detach()
    width = 2 * bound / cells
    lower = torch.arange(-1, cells + 1, device=knots.device, dtype=knots.dtype) * width - bound
    lower[0] = -math.inf
    below = torch.searchsorted(knots, lower - width / 4, right=True)
    ahead = torch.cat([knots, knots.new_full((1,), math.inf)]).index_select(0, below)
    return below.to(knots.dtype), ahead, cells


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
    if inverse:
        knots, min_size = ch, min_bin_height
        body = torch.stack([ch[:-1], 1 / h, cw[:-1], w, d[:-1], d[1:]])
    else:
        knots, min_size = cw, min_bin_width
        body = torch.stack([cw[:-1], 1 / w, ch[:-1], h, d[:-1], d[1:]])
    tail = body.new_tensor(_IDENTITY).unsqueeze(1)
    table = torch.cat([tail, body, tail], dim=1)
    # The right tail starts just above B, so x = B stays in the last bin, as in nflows.
    knots = torch.cat([knots[:-1], knots[-1:].nextafter(knots.new_full((1,), math.inf))]).detach()
    below, ahead, cells = _lookup(knots, tail_bound, min_size)
    return RqTables(knots, table, below, ahead, float(tail_bound), cells, inverse)


def _locate(flat: Tensor, tables: RqTables) -> Tensor:
    r"""Bin of every entry (``int64``): ``#{j : t_j ≤ x}`` in ``[0, K+1]``, 0 and ``K+1`` the tails.

    Equals ``torch.searchsorted(knots, x, right=True)`` without a binary search per entry (which
    dominates on a CPU): with ``i`` the grid cell of ``x`` (its rounding error is far below the
    ``c/4`` widening), ``bin(x) = below[i] + [x ≥ ahead[i]]``. The comparison is written into a
    float tensor (``out=``): PyTorch's boolean outputs take several times longer on a CPU. NaN
    inputs land in cell 0, bin 0 (the identity tail) and stay NaN in the output.
    """
    flat = flat.detach()
    if tables.cells == 0:
        return torch.searchsorted(tables.knots, flat, right=True)
    bound, cells = tables.bound, tables.cells
    width = 2 * bound / cells
    cell = (flat * (1 / width)).add_((bound + width) / width).nan_to_num_(0.0).clamp_(0, cells + 1).long()
    bins = torch.ge(flat, tables.ahead.index_select(0, cell), out=torch.empty_like(flat))
    return bins.add_(tables.below.index_select(0, cell)).long()


def _terms(x: Tensor, xk: Tensor, a: Tensor, h: Tensor, d0: Tensor, d1: Tensor, *,
           inplace: bool) -> tuple[Tensor, ...]:
    """The per-entry intermediates ``θ, x − x_k, δ, s, e, D, θ(eθ + d_k)/D, R`` of one bin each.

    The Horner forms keep the tails exact: for the identity column ``s = e = 0`` and no ``θ²``
    appears that could overflow. ``inplace`` (no autograd) reuses fresh temporaries.
    """
    xm = x - xk
    theta = xm * a
    delta = h * a
    s = (d0 + d1).sub_(delta, alpha=2) if inplace else d0 + d1 - 2 * delta
    e = delta - d0
    den = torch.addcmul(delta, torch.addcmul(s, s, theta, value=-1), theta)
    numerator = torch.addcmul(d0, e, theta)
    m_den = numerator.mul_(theta).div_(den) if inplace else numerator * theta / den
    big_r = torch.addcmul(d0, torch.addcmul(e, s, theta, value=0.5), theta, value=2)
    return theta, xm, delta, s, e, den, m_den, big_r


def _values(yk: Tensor, h: Tensor, delta: Tensor, den: Tensor, m_den: Tensor, big_r: Tensor, *,
            out: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """``g(x) = y_k + h · θ(eθ + d_k)/D`` and ``log g'(x) = log(δ² R / D²)`` (into ``out``)."""
    q = delta / den
    if out is None:  # autograd: no in-place operations on what its backward reads
        return torch.addcmul(yk, h, m_den), torch.log(q * q * big_r)
    return torch.addcmul(yk, h, m_den, out=out[0]), torch.log(q.mul_(q).mul_(big_r), out=out[1])


def _forward_autograd(x: Tensor, xk: Tensor, a: Tensor, yk: Tensor, h: Tensor, d0: Tensor,
                      d1: Tensor) -> tuple[Tensor, Tensor]:
    """The forward formulas differentiated by autograd (any order)."""
    *_, delta, _, _, den, m_den, big_r = _terms(x, xk, a, h, d0, d1, inplace=False)
    return _values(yk, h, delta, den, m_den, big_r)


def _chunks(x: Tensor) -> list[slice]:
    """Slices of ``x`` (flat) small enough that one chunk's intermediates stay in cache.

    On a CPU the per-entry work is a few dozen elementwise passes; on whole 256×512 tensors
    they run from the shared L3 cache or memory. Chunks of 256 KiB per tensor keep more of them
    in a core's L2 (1 MiB here): forward and backward of the 256×512 float32 kernel took a
    median 0.75× the time of whole tensors on one thread, with the same best case (a loaded
    2-core EPYC, CPU time, 40 interleaved rounds; the forward alone is unchanged).
    Elsewhere (CUDA) and under ``torch.compile``: one chunk.
    """
    n = x.shape[0]
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return [slice(0, n)]
    size = max(_CHUNK_BYTES // x.element_size(), 1)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class _SharedSpline(torch.autograd.Function):
    """``(g(x), log g'(x))`` for flat entries ``x`` ``(N,)`` through the ``(6, K+2)`` table of
    ``tables``, with the closed-form first derivative described in the module docstring.

    Per entry the backward keeps only ``x`` and its bin: it recomputes the intermediates chunk
    by chunk (in cache), which costs less than writing a dozen of them out and reading them back.
    """

    @staticmethod
    def forward(ctx, x: Tensor, table: Tensor, tables: RqTables) -> tuple[Tensor, Tensor]:
        out, log_det = torch.empty_like(x), torch.empty_like(x)
        saved_bins = []
        for part in _chunks(x):
            bins = _locate(x[part], tables)
            xk, a, yk, h, d0, d1 = table.index_select(1, bins).unbind(0)
            *_, delta, _, _, den, m_den, big_r = _terms(x[part], xk, a, h, d0, d1, inplace=True)
            _values(yk, h, delta, den, m_den, big_r, out=(out[part], log_det[part]))
            saved_bins.append(bins)
        ctx.save_for_backward(x, table, *saved_bins)
        return out, log_det

    @staticmethod
    def backward(ctx, grad_out: Tensor, grad_log: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "RqSpline: the fast spline kernel has a closed-form first derivative only; for "
                "second derivatives (create_graph=True) use RqSpline(backend='autograd')"
            )
        x, table, *saved_bins = ctx.saved_tensors
        # Incoming gradients of sums are expanded (stride 0): strided operands take a CPU's
        # elementwise kernels off their vectorised path, so materialise them once.
        grad_out, grad_log = grad_out.contiguous(), grad_log.contiguous()
        grad_x = torch.empty_like(x)
        grad_table = torch.zeros_like(table) if ctx.needs_input_grad[1] else None
        for part, bins in zip(_chunks(x), saved_bins, strict=True):
            xk, a, _, h, d0, d1 = table.index_select(1, bins).unbind(0)
            terms = _terms(x[part], xk, a, h, d0, d1, inplace=True)
            stats = _backward_terms(grad_out[part], grad_log[part], a, h, d0, *terms,
                                    parameters=grad_table is not None, grad_x=grad_x[part])
            if grad_table is not None:
                # The shared knots' gradient: one scatter-add per bin quantity.
                for row, stat in zip(grad_table, stats, strict=True):
                    row.scatter_add_(0, bins, stat)
        if grad_table is not None:
            # Constant factors the per-entry terms leave out (see _backward_terms).
            grad_table.mul_(grad_table.new_tensor([-1.0, 1.0, 1.0, 1.0, 1.0, -2.0]).unsqueeze(1))
        return grad_x, grad_table, None


def _backward_terms(
    g_out: Tensor, g_log: Tensor, a: Tensor, h: Tensor, d0: Tensor, theta: Tensor, xm: Tensor,
    delta: Tensor, s: Tensor, e: Tensor, den: Tensor, m_den: Tensor, big_r: Tensor, *,
    parameters: bool, grad_x: Tensor,
) -> tuple[Tensor, ...]:
    """Per entry, the derivatives of ``Σ ḡ·g + ℓ̄·log g'`` with respect to ``x`` (written into
    ``grad_x``) and, with ``parameters``, to the bin's ``x_k, 1/w_k, y_k, h_k, d_k, d_{k+1}``,
    the first up to a factor −1 and the last up to −2 (applied once per bin by the caller).

    The chain rule through ``g = y_k + h·m/D`` and ``log g' = 2 log δ + log R − 2 log D``, with
    ``m = θ(eθ + d_k)``, ``D = δ + sθ(1−θ)``, ``R = sθ² + 2eθ + d_k``, ``δ = h/w``,
    ``s = d_k + d_{k+1} − 2δ``, ``e = δ − d_k``, ``θ = (x − x_k)/w``: ``g_m = ∂/∂m``,
    ``−2 g_d = ∂/∂D``, ``g_r = ∂/∂R``, ``g_θ = ∂/∂θ``, ``2 g_e = ∂/∂e``, ``−2 g_s = ∂/∂s``,
    ``2 g_δ = ∂/∂δ`` (the total derivative through ``s`` and ``e``).
    """
    g_oh = g_out * h
    g_m = g_oh / den
    g_d = torch.addcmul(g_log, g_oh, m_den, value=0.5).div_(den)
    g_r = g_log / big_r
    g_theta = g_m * torch.addcmul(d0, e, theta, value=2)
    g_theta.addcmul_(g_d, torch.addcmul(s, s, theta, value=-2), value=-2)
    g_theta.addcmul_(g_r, torch.addcmul(e, s, theta), value=2)
    torch.mul(g_theta, a, out=grad_x)  # ∂θ/∂x = 1/w
    if not parameters:
        return ()
    g_e = torch.addcmul(g_r, g_m, theta, value=0.5).mul_(theta)
    g_s = torch.addcmul(g_d, torch.add(g_r, g_d, alpha=2), theta, value=-0.5).mul_(theta)
    g_delta = (g_log / delta).sub_(g_d).add_(g_e).add_(g_s, alpha=2)
    g_d0 = torch.addcmul(g_r, g_m, theta).sub_(g_e, alpha=2).sub_(g_s, alpha=2)
    g_h = torch.addcmul(g_out * m_den, g_delta, a, value=2)
    g_a = torch.addcmul(g_theta.mul_(xm), g_delta, h, value=2)
    return grad_x, g_a, g_out, g_h, g_d0, g_s


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


def rq_apply(inputs: Tensor, tables: RqTables, *, closed_form: bool = True) -> tuple[Tensor, Tensor]:
    """The per-entry part: ``(outputs, log_abs_det)``, both of the input's shape.

    Forward with ``closed_form`` (the default): :class:`_SharedSpline`, first derivatives only.
    Otherwise, and for the inverse, the same formulas through autograd (any order).
    """
    flat = inputs.reshape(-1)
    if closed_form and not tables.inverse:
        out, log_det = _SharedSpline.apply(flat, tables.coefficients, tables)
    else:
        columns = tables.coefficients.index_select(1, _locate(flat, tables)).unbind(0)
        out, log_det = (_inverse if tables.inverse else _forward_autograd)(flat, *columns)
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
