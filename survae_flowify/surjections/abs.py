r"""The absolute-value inference surjection (SurVAE Flows, Nielsen et al. 2020, §4 and table 1)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from survae_flowify import _checks
from survae_flowify.algebra.transform import InferenceSurjection, Shape, check_context
from survae_flowify.bijections._nets import MLP, ConvNet, hidden_widths

__all__ = ["Abs", "SignDensityKind"]

SignDensityKind = Literal["learned", "uniform"]
SIGN_DENSITY_KINDS: tuple[SignDensityKind, ...] = ("learned", "uniform")
_LOG_2 = math.log(2.0)


class Abs(InferenceSurjection):
    r"""``z = |x|`` elementwise; the signs are what the forward drops.

    Forward: ``z = |x|``, ``s = sign(x) ∈ {−1, +1}`` (``x = 0`` counts as ``s = +1``: a set of
    measure zero, and ``z = 0`` maps back to ``0`` whichever sign is drawn). Contribution

    $$V(x) = \log p(s \mid z) = \sum_i \log \sigma(s_i\, \ell_i(z)),$$

    a Bernoulli per entry whose logit ``ℓ_i`` is predicted from ``z`` (and the flow context) by a
    small network (``sign_density="learned"``, the default), or ``ℓ = 0`` (``"uniform"``:
    ``V = −D log 2``). The map ``x ↦ (z, s)`` has unit Jacobian on each orthant, so
    ``p(x) = p(z) · p(s | z)`` exactly.

    Inverse: ``x = s ⊙ z`` with ``s ~ p(· | z)``; ``mean=True`` takes the most likely sign
    (``+1`` on a tie). ``forward(inverse(z)) = z`` holds exactly for ``z ≥ 0``, so the layer is
    exact (SurVAE §4, "Abs").

    ``shape``: the event shape, an int ``D`` or a tuple (e.g. ``(C, H, W)``). The learned density
    needs it (its network has one logit per entry: an MLP of widths ``hidden`` on the flattened
    ``z``, or for ``(C, H, W)`` a fully convolutional net, whose last layer starts at zero so the
    signs start uniform); ``"uniform"`` works without it, on any shape. ``context_features=k``
    (``"learned"`` only) makes the logits depend on a flow context ``(B, k)`` too.
    """

    def __init__(
        self,
        shape: int | tuple[int, ...] | None = None,
        *,
        sign_density: SignDensityKind = "learned",
        hidden: int | tuple[int, ...] = 32,
        context_features: int | None = None,
    ) -> None:
        super().__init__()
        self.sign_density = _checks.choice("Abs", "sign_density", sign_density, SIGN_DENSITY_KINDS)
        widths = hidden_widths("Abs", hidden)
        self._shape = None if shape is None else _checks.shape("Abs", "shape", shape)
        if context_features is not None:
            _checks.positive_int("Abs", "context_features", context_features)
            if sign_density != "learned":
                raise ValueError(f"Abs: context_features={context_features} needs sign_density='learned' "
                                 f"(the uniform signs see no context), got sign_density={sign_density!r}")
        self.context_features = context_features
        self.net: nn.Module | None = None
        if sign_density == "learned":
            if self._shape is None:
                raise ValueError("Abs: sign_density='learned' needs the event shape, e.g. Abs(2) or "
                                 "Abs((C, H, W)); got shape=None (use sign_density='uniform' for any shape)")
            self.net = _sign_net(self._shape, widths, context_features)

    def extra_repr(self) -> str:
        out = f"shape={self._shape}, sign_density={self.sign_density!r}"
        return out if self.context_features is None else out + f", context_features={self.context_features}"

    @property
    def in_shape(self) -> Shape | None:
        return self._shape

    @property
    def out_shape(self) -> Shape | None:
        return self._shape

    def sign_logits(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """``ℓ(z)``, the logit of ``P(s = +1 | z)`` per entry, shape of ``z`` (learned density)."""
        if self.net is None:
            raise ValueError("Abs.sign_logits: sign_density='uniform' has no logits (they are all 0)")
        c = None if context is None else context.to(z.dtype)
        if isinstance(self.net, ConvNet):
            return self.net(z, c)
        return self.net(z.flatten(1), c).view_as(z)

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_context(self, context, self.context_features, x.shape[0])
        z = x.abs()
        if self.net is None:
            return z, x.new_full((x.shape[0],), -_LOG_2 * math.prod(x.shape[1:]))
        logits = self.sign_logits(z, context)
        signed = torch.where(x < 0, -logits, logits)  # s ℓ
        return z, -F.softplus(-signed).flatten(1).sum(1)  # log σ(s ℓ)

    def _inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool) -> Tensor:
        check_context(self, context, self.context_features, z.shape[0])
        logits = z.new_zeros(()) if self.net is None else self.sign_logits(z, context)
        if mean:
            positive = (logits >= 0).expand_as(z)
        else:
            positive = torch.rand(z.shape, dtype=z.dtype, device=z.device) < torch.sigmoid(logits)
        return torch.where(positive, z, -z)


def _sign_net(shape: tuple[int, ...], widths: tuple[int, ...], context_features: int | None) -> nn.Module:
    if len(shape) == 3:  # a (C, H, W) map: a convolutional net, one logit per entry
        return ConvNet(shape[0], shape[0], widths, context_features)
    d = math.prod(shape)
    return MLP(d, d, widths, context_features)
