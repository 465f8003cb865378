r"""Coupling layers (Dinh et al., 2017; Durkan et al., 2019): half the entries pass, half are transformed.

With ``x ∈ R^{D}`` (vectors) or ``x ∈ R^{C×H×W}`` (images) split along dimension 1 into
``x_a`` (the first ``⌊D/2⌋`` features or channels) and ``x_b`` (the other ``⌈D/2⌉``):

$$ z_a = x_a, \qquad z_b = τ(x_b;\ θ(x_a, c)), \qquad
   V = \log\left|\det \frac{∂z}{∂x}\right| = \sum_j \log |τ'(x_{b,j};\ θ_j)|, $$

because the Jacobian is block triangular with the identity on ``x_a``. ``θ`` comes from a network:
an MLP for vectors, a small conv net (3×3, 1×1, 3×3 convolutions, same padding) for images; the
context ``c`` (``(B, c)``) is concatenated to the MLP's input and enters the conv net as ``c``
extra constant channels. The inverse computes ``θ`` from ``z_a = x_a`` and inverts ``τ``
elementwise: one pass of the network in both directions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from survae_flowify import _checks
from survae_flowify.algebra.transform import Bijection, Shape, check_context
from survae_flowify.bijections._elementwise import AffineMap, SplineMap
from survae_flowify.bijections._nets import MLP, ConvNet, hidden_widths
from survae_flowify.transforms._rq_kernel import DEFAULT_MIN_BIN_WIDTH

__all__ = ["AffineCoupling", "RqCoupling"]

MAX_BINS = round(1 / DEFAULT_MIN_BIN_WIDTH)  # every bin is at least this fraction of [−B, B]


class _Coupling(Bijection):
    """The split, the network and the bookkeeping; subclasses choose the elementwise map."""

    def __init__(self, shape: int | Sequence[int | None], elementwise: AffineMap | SplineMap,
                 hidden: int | Sequence[int], context_features: int | None) -> None:
        super().__init__()
        owner = type(self).__name__
        self.shape = _checks.shape(owner, "shape", shape, allow_none=True)
        if len(self.shape) not in (1, 3) or self.shape[0] is None or (
                len(self.shape) == 1 and None in self.shape):
            raise ValueError(f"{owner}: shape must be (D,) or (C, H, W) with D, C known (H, W may be "
                             f"None), got {shape!r}")
        if self.shape[0] < 2:
            raise ValueError(f"{owner}: dimension 1 must have at least 2 entries to split, got "
                             f"shape {self.shape}")
        if context_features is not None:
            context_features = _checks.positive_int(owner, "context_features", context_features)
        self.context_features = context_features
        self.elementwise = elementwise
        self.split = self.shape[0] // 2
        passed, transformed = self.split, self.shape[0] - self.split
        net = MLP if len(self.shape) == 1 else ConvNet
        self.net = net(passed, transformed * elementwise.num_params, hidden_widths(owner, hidden),
                       context_features)

    @property
    def in_shape(self) -> Shape:
        return self.shape

    @property
    def out_shape(self) -> Shape:
        return self.shape

    def extra_repr(self) -> str:
        context = "" if self.context_features is None else f", context_features={self.context_features}"
        return f"shape={self.shape}, {self.elementwise!r}{context}"

    def _params(self, x_a: Tensor, context: Tensor | None) -> Tensor:
        """The network's output as ``(P, B, ⌈D/2⌉, *spatial)`` (parameter axis first, a view)."""
        raw = self.net(x_a, context)
        transformed = self.shape[0] - self.split  # explicit, not -1: a batch of 0 must reshape too
        raw = raw.view(raw.shape[0], self.elementwise.num_params, transformed, *raw.shape[2:])
        return raw.movedim(1, 0)

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_context(self, context, self.context_features, x.shape[0])
        if self.context_features is None:
            context = None
        x_a, x_b = x[:, :self.split], x[:, self.split:]
        z_b, log_det = self.elementwise(x_b, self._params(x_a, context), inverse=False)
        return torch.cat([x_a, z_b], dim=1), log_det.flatten(1).sum(1)

    def _inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool) -> Tensor:
        check_context(self, context, self.context_features, z.shape[0])
        if self.context_features is None:
            context = None
        z_a, z_b = z[:, :self.split], z[:, self.split:]
        x_b, _ = self.elementwise(z_b, self._params(z_a, context), inverse=True)
        return torch.cat([z_a, x_b], dim=1)


class AffineCoupling(_Coupling):
    r"""Affine coupling (RealNVP, Dinh et al., 2017): ``z_b = x_b · exp(s) + t``.

    ``(s, t) = θ(x_a, c)`` per transformed entry, with a bounded log-scale
    ``s = 3 · tanh(ŝ / 3)``; contribution ``V = Σ_j s_j``, shape ``(B,)``; inverse
    ``x_b = (z_b − t) · exp(−s)``. Shapes ``(B, D) → (B, D)`` or ``(B, C, H, W) → (B, C, H, W)``;
    the first ``⌊D/2⌋`` features (channels) pass unchanged (see the module docstring for the
    split, the networks and the context). ``hidden``: the hidden widths (an int ``h`` means two
    layers of ``h``). The last layer starts at zero: the layer starts as the identity.
    """

    def __init__(self, shape: int | Sequence[int | None], *, hidden: int | Sequence[int] = 64,
                 context_features: int | None = None) -> None:
        super().__init__(shape, AffineMap(), hidden, context_features)


class RqCoupling(_Coupling):
    r"""Rational-quadratic spline coupling (Neural Spline Flows, Durkan et al., 2019, §3.1).

    Every transformed entry ``x_{b,j}`` gets its own monotonic spline ``g_j`` with ``num_bins``
    bins on ``[−B, B]`` (``B = tail_bound``), identity outside, whose ``3K − 1`` parameters
    (widths, heights, inner derivatives, nflows' parametrisation) come from ``θ(x_a, c)``:
    ``z_b = g(x_b)``, contribution ``V = Σ_j log g_j'(x_{b,j})``; the inverse solves each bin's
    quadratic. Shapes as :class:`AffineCoupling`. The last layer starts at zero, which with the
    derivative offset makes every spline the identity at the start.
    """

    def __init__(self, shape: int | Sequence[int | None], *, num_bins: int = 8, tail_bound: float = 3.0,
                 hidden: int | Sequence[int] = 64, context_features: int | None = None) -> None:
        owner = type(self).__name__
        num_bins = _checks.integer(owner, "num_bins", num_bins, minimum=1, maximum=MAX_BINS)
        tail_bound = _checks.positive_float(owner, "tail_bound", tail_bound)
        super().__init__(shape, SplineMap(num_bins, tail_bound), hidden, context_features)
