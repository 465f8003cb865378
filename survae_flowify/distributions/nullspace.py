r"""A basis-free conditional density on the null space of a weight (the Gram layer's, DESIGN.md §13).

A reducing Gram layer ``z = W x + b`` (``W`` of shape ``(r, n)``, ``r < n``) drops the component
``P⊥ x`` of ``x`` in the null space of ``W`` (dimension ``m = n − r``). With ``Q`` (``(n, r)``,
orthonormal columns spanning the row space of ``W``, from the thin QR ``Wᵀ = Q R``) the projector
is ``P⊥ = I − Q Qᵀ`` and, for any ``v``,

$$\|P_\perp v\|^2 = \|v\|^2 - \|Q^\top v\|^2 = \|v\|^2 - \|L^{-1} W v\|^2, \quad L = R^\top.$$

:class:`NullSpaceNormal` is the normal ``N(P⊥ μ(c), σ(c)² I_m)`` on that ``m``-dimensional space,
isotropic, its mean predicted *in data space* (``μ ∈ R^n``; only ``P⊥ μ`` matters) by a small
network from what was kept ``c`` (and an optional flow context ``a``):

$$\log p(P_\perp x \mid c) = -\frac{\|P_\perp (x - \mu)\|^2}{2\sigma^2} - m \log \sigma
  - \frac m2 \log 2\pi .$$

Isotropy is what makes it basis-free: the density of the ``m`` null-space coordinates in *any*
orthonormal basis of the null space is the same number, so no rotation is ever formed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify import _checks

__all__ = ["NullSpaceNormal"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_SCALE_BOUND = 5.0  # as ConditionalNormalDensity: |log σ| < 5 keeps float32 stable


class NullSpaceNormal(nn.Module):
    """``N(P⊥ μ(c, a), σ(c, a)² I)`` on the null space of a ``(kept, features)`` weight.

    Args:
        features: ``n``, the data size (``μ`` has shape ``(B, n)``).
        kept_features: ``r``, the size of what was kept (``c`` has shape ``(B, r)``); ``r < n``.
        hidden: width of the network ``Linear(r + k, hidden) → GELU → Linear(hidden, n + 1)``,
            whose last layer starts at zero (``μ = 0``, ``σ = 1``: the standard normal).
        context_features: ``k``, the size of an optional flow context ``a`` (``(B, k)``) that the
            network sees as well, concatenated to ``c``.
    """

    def __init__(self, features: int, kept_features: int, *, hidden: int = 64,
                 context_features: int | None = None) -> None:
        super().__init__()
        owner = "NullSpaceNormal"
        self.features = _checks.positive_int(owner, "features", features)
        self.kept_features = _checks.integer(owner, "kept_features", kept_features, minimum=1,
                                             maximum=features - 1)
        hidden = _checks.positive_int(owner, "hidden", hidden)
        self.context_features = None if context_features is None else _checks.positive_int(
            owner, "context_features", context_features)
        last = nn.Linear(hidden, features + 1)
        self.net = nn.Sequential(nn.Linear(kept_features + (self.context_features or 0), hidden),
                                 nn.GELU(), last)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def extra_repr(self) -> str:
        out = f"features={self.features}, kept_features={self.kept_features}"
        return out if self.context_features is None else out + f", context_features={self.context_features}"

    @property
    def dropped_features(self) -> int:
        return self.features - self.kept_features

    def params(self, kept: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(μ (B, n), log σ (B,))`` from ``kept`` (``(B, r)``) and the optional context."""
        net_in = kept if self.context_features is None else torch.cat([kept, context.to(kept.dtype)], 1)
        out = self.net(net_in)
        loc, raw = out[:, : self.features], out[:, self.features]
        return loc, _LOG_SCALE_BOUND * torch.tanh(raw / _LOG_SCALE_BOUND)

    def log_prob(self, x: Tensor, q: Tensor, kept: Tensor, context: Tensor | None = None) -> Tensor:
        """``log p(P⊥ x | c)``, shape ``(B,)``, for ``x`` (``(B, n)``) and ``Q`` (``(n, r)``)."""
        loc, log_scale = self.params(kept, context)
        d = x - loc
        residual_sq = (d.square().sum(1) - (d @ q).square().sum(1)).clamp_min(0)
        m = self.dropped_features
        return -0.5 * residual_sq * torch.exp(-2 * log_scale) - m * (log_scale + _HALF_LOG_2PI)

    def draw(self, q: Tensor, kept: Tensor, context: Tensor | None = None, *, mean: bool) -> Tensor:
        """A sample ``P⊥ (μ + σ ε)`` (``ε ~ N(0, I_n)``), or the mean ``P⊥ μ``; shape ``(B, n)``."""
        loc, log_scale = self.params(kept, context)
        if not mean:
            eps = torch.randn(kept.shape[0], self.features, dtype=kept.dtype, device=kept.device)
            loc = loc + torch.exp(log_scale)[:, None] * eps
        return loc - (loc @ q) @ q.T
