"""Monotonic rational-quadratic spline activation (Durkan et al., 2019) with linear tails."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from survae_flowify import _checks
from survae_flowify._cache import ParameterCache
from survae_flowify.algebra.transform import Bijection
from survae_flowify.transforms._rq_kernel import (
    DEFAULT_MIN_BIN_HEIGHT,
    DEFAULT_MIN_BIN_WIDTH,
    DEFAULT_MIN_DERIVATIVE,
    RqTables,
    rq_apply,
    rq_native_forward,
    rq_tables,
)

__all__ = ["RqSpline"]

Backend = Literal["fast", "autograd", "nflows"]
_BACKENDS = ("fast", "autograd", "nflows")


class RqSpline(ParameterCache, Bijection):
    r"""Elementwise monotonic rational-quadratic spline on ``[−B, B]``, identity outside.

    The paper's activation (appendix F, figures 8–11: ``RqSpline()``, 10 bins, bound 2): one
    spline per layer, shared by every entry, from Durkan et al. (2019, §3.1). With knots
    ``x_0 = −B < … < x_K = B`` and ``y_0 = −B < … < y_K = B``, knot derivatives ``d_k > 0``
    (``d_0 = d_K = 1`` so the identity tails join smoothly), ``w_k = x_{k+1} − x_k``,
    ``h_k = y_{k+1} − y_k``, ``δ_k = h_k / w_k`` and ``θ = (x − x_k) / w_k`` in bin ``k``:

    $$ z = g(x) = y_k + \frac{h_k\,[δ_k θ^2 + d_k θ(1−θ)]}{δ_k + (d_k + d_{k+1} − 2δ_k)\,θ(1−θ)},
       \qquad z = x \text{ for } |x| > B. $$

    * forward: ``z = g(x)`` elementwise, any event shape ``(B, *shape) → (B, *shape)``;
    * inverse: ``x = g^{-1}(z)``, the root in ``[0, 1]`` of the bin's quadratic in ``θ``;
    * contribution: ``V = Σ_i log g'(x_i)`` (``0`` for entries in the tails), shape ``(B,)``.

    Parameters (named as in nflows, so state dicts carry over): ``unnormalized_widths``
    ``(K,)`` and ``unnormalized_heights`` ``(K,)`` (softmax, minimum bin size ``10⁻³·2B``),
    ``unnormalized_derivatives`` ``(K−1,)`` (softplus, minimum ``10⁻³``). Initialised to the
    identity.

    ``backend="fast"`` (default) evaluates the function with the shared-knot kernel of
    :mod:`survae_flowify.transforms._rq_kernel`: ``O(K)`` work per call (and ``O(M)`` for a
    lookup grid of ``M ≈ 2/10⁻³`` cells), per entry a grid lookup, one gather and about a dozen
    fused elementwise operations, and a hand-written backward (first derivatives only: a second
    derivative raises an error), free of graph breaks under
    ``torch.compile``. On a CPU the forward direction and its backward run in C
    (:mod:`survae_flowify.transforms._rq_native`, compiled on first use with the system's C
    compiler; ``SURVAE_FLOWIFY_NATIVE=0`` switches it off), about 3× faster; without a compiler,
    on a GPU, under ``torch.compile`` and for the inverse, as PyTorch operations.
    ``backend="autograd"`` evaluates the same formulas and lets autograd differentiate them (any
    order; slower, and it keeps more per entry for the backward).
    ``backend="nflows"`` calls nflows' ``unconstrained_rational_quadratic_spline`` with the
    parameters expanded to every entry (the paper's code; 15–40× slower on a CPU), for comparison. All
    compute the same function to float precision. In eval mode without gradients (``torch.no_grad``
    or frozen parameters) the fast backend's PyTorch kernel reuses its parameter-only tables while
    the parameters and ``tail_bound`` are unchanged (:mod:`survae_flowify._cache`); the C kernel
    rebuilds them on every call, in microseconds.
    """

    def __init__(self, num_bins: int = 10, tail_bound: float = 2.0, *, backend: Backend = "fast") -> None:
        super().__init__()
        # Every bin is at least DEFAULT_MIN_BIN_WIDTH of the interval wide: at most 1/min bins.
        max_bins = round(1 / DEFAULT_MIN_BIN_WIDTH)
        self.num_bins = _checks.integer("RqSpline", "num_bins", num_bins, minimum=1, maximum=max_bins)
        self.tail_bound = _checks.positive_float("RqSpline", "tail_bound", tail_bound)
        self.backend = _checks.choice("RqSpline", "backend", backend, _BACKENDS)
        if self.backend == "nflows":
            _nflows_spline()  # fail here, with the fix, rather than on the first call
        self.unnormalized_widths = nn.Parameter(torch.zeros(num_bins))
        self.unnormalized_heights = nn.Parameter(torch.zeros(num_bins))
        # softplus⁻¹(1 − min_derivative): interior derivatives start at exactly 1 (identity).
        one = math.log(math.expm1(1 - DEFAULT_MIN_DERIVATIVE))
        self.unnormalized_derivatives = nn.Parameter(torch.full((num_bins - 1,), one))

    def extra_repr(self) -> str:
        backend = "" if self.backend == "fast" else f", backend={self.backend!r}"
        return f"num_bins={self.num_bins}, tail_bound={self.tail_bound}{backend}"

    def __setstate__(self, state: dict) -> None:
        state.setdefault("backend", "fast")  # modules pickled before the fast kernel existed
        super().__setstate__(state)

    def _spline_parameters(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.unnormalized_widths, self.unnormalized_heights, self.unnormalized_derivatives

    def _tables(self, x: Tensor, *, inverse: bool) -> RqTables:
        """The parameter-only part; cached in eval mode (:mod:`survae_flowify._cache`)."""
        params = self._spline_parameters()

        def build() -> RqTables:
            return rq_tables(*(p.to(x.dtype) for p in params), tail_bound=self.tail_bound, inverse=inverse)

        return self._derived("inverse" if inverse else "forward", params, build,
                             extra=(x.dtype, self.tail_bound))

    def _nflows(self, x: Tensor, *, inverse: bool) -> tuple[Tensor, Tensor]:
        shape = (*x.shape, -1)
        w, h, d = (p.to(x.dtype).expand(shape) for p in self._spline_parameters())
        return _nflows_spline()(
            x, w, h, d, inverse=inverse, tails="linear", tail_bound=self.tail_bound,
            min_bin_width=DEFAULT_MIN_BIN_WIDTH, min_bin_height=DEFAULT_MIN_BIN_HEIGHT,
            min_derivative=DEFAULT_MIN_DERIVATIVE,
        )

    def _spline(self, x: Tensor, *, inverse: bool) -> tuple[Tensor, Tensor]:
        if self.backend == "nflows":
            return self._nflows(x, inverse=inverse)
        if self.backend == "fast" and not inverse:
            native = rq_native_forward(x, self._spline_parameters(), tail_bound=self.tail_bound)
            if native is not None:  # tables, loops and backward in C: nothing to cache
                return native
        return rq_apply(x, self._tables(x, inverse=inverse), closed_form=self.backend == "fast")

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, log_d = self._spline(x, inverse=False)
        # A sum over the event dimensions, not flatten(1): the layout may be channels-last.
        return z, log_d.sum(tuple(range(1, log_d.dim()))) if log_d.dim() > 1 else log_d

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return self._spline(z, inverse=True)[0]


def _nflows_spline() -> Callable[..., tuple[Tensor, Tensor]]:
    """nflows' spline function, imported on use: nflows is an optional extra."""
    try:
        from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline
    except ImportError as error:
        raise ImportError('RqSpline(backend="nflows") needs the nflows package: pip install '
                          'survae_flowify[nflows] (or use the default backend="fast")') from error
    return unconstrained_rational_quadratic_spline
