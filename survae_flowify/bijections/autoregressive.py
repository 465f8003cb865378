r"""Masked autoregressive layers (MAF, Papamakarios et al., 2017) with a MADE network.

For ``x ∈ R^D`` and a context ``c``, every feature is transformed with parameters that depend
only on the features before it, in the layer's order ``1 … D``:

$$ z_i = τ(x_i;\ θ_i(x_{<i}, c)), \qquad V = \sum_{i=1}^{D} \log |τ'(x_i;\ θ_i)|, $$

the log-determinant of a lower-triangular Jacobian. One MADE pass (Germain et al., 2015) gives
every ``θ_i`` at once, so the forward takes one pass. The inverse must recover ``x_i`` from
``z_i`` and ``x_{<i}``: starting from ``x = 0``, pass ``k`` computes ``θ`` from the current ``x``
and inverts ``τ`` elementwise; after pass ``k`` the first ``k`` features are final (feature ``k``
only needed ``x_{<k}``, already final), so ``D`` passes invert the layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor

from survae_flowify import _checks
from survae_flowify.algebra.transform import Bijection, Shape, check_context
from survae_flowify.bijections._elementwise import AffineMap, SplineMap
from survae_flowify.bijections._nets import MaskedMLP, hidden_widths
from survae_flowify.bijections.couplings import MAX_BINS

__all__ = ["MaskedAutoregressive"]

Kind = Literal["affine", "spline"]


class MaskedAutoregressive(Bijection):
    r"""Masked autoregressive bijection ``(B, D) → (B, D)``: ``z_i = τ(x_i; θ_i(x_{<i}, c))``.

    ``transform="affine"``: ``z_i = x_i · exp(s_i) + t_i`` with ``s_i = 3 · tanh(ŝ_i / 3)``,
    ``V = Σ_i s_i``. ``transform="spline"``: a rational-quadratic spline per feature with
    ``num_bins`` bins on ``[−B, B]`` (``B = tail_bound``), identity outside,
    ``V = Σ_i log g_i'(x_i)``. The parameters come from a MADE (masked MLP, hidden widths
    ``hidden``; an int ``h`` means two layers of ``h``) whose input degrees are ``1 … D``, hidden
    degrees cycle through ``1 … D − 1``, and a context ``(B, context_features)`` enters the first
    hidden layer unmasked. The forward is one network pass, the inverse ``D`` passes (module
    docstring). The last layer starts at zero: the layer starts as the identity.
    """

    def __init__(self, features: int, *, transform: Kind = "affine", hidden: int | Sequence[int] = 64,
                 num_bins: int = 8, tail_bound: float = 3.0, context_features: int | None = None) -> None:
        super().__init__()
        owner = type(self).__name__
        self.features = _checks.positive_int(owner, "features", features)
        self.transform = _checks.choice(owner, "transform", transform, ("affine", "spline"))
        num_bins = _checks.integer(owner, "num_bins", num_bins, minimum=1, maximum=MAX_BINS)
        tail_bound = _checks.positive_float(owner, "tail_bound", tail_bound)
        if context_features is not None:
            context_features = _checks.positive_int(owner, "context_features", context_features)
        self.context_features = context_features
        self.elementwise = AffineMap() if transform == "affine" else SplineMap(num_bins, tail_bound)
        self.made = MaskedMLP(self.features, self.elementwise.num_params, hidden_widths(owner, hidden),
                              context_features)

    @property
    def in_shape(self) -> Shape:
        return (self.features,)

    @property
    def out_shape(self) -> Shape:
        return (self.features,)

    def extra_repr(self) -> str:
        context = "" if self.context_features is None else f", context_features={self.context_features}"
        return f"features={self.features}, {self.elementwise!r}{context}"

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_context(self, context, self.context_features, x.shape[0])
        if self.context_features is None:
            context = None
        z, log_det = self.elementwise(x, self.made(x, context), inverse=False)
        return z, log_det.sum(1)

    def _inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool) -> Tensor:
        check_context(self, context, self.context_features, z.shape[0])
        if self.context_features is None:
            context = None
        x = z.new_zeros(z.shape)
        for _ in range(self.features):
            x, _ = self.elementwise(z, self.made(x, context), inverse=True)
        return x
