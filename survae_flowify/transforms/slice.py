"""The slicing inference surjection."""

from __future__ import annotations

import torch
from torch import Tensor

from survae_flowify import _checks
from survae_flowify.algebra.transform import InferenceSurjection, Shape, check_context
from survae_flowify.distributions.conditional import InverseDensityKind, make_inverse_density

__all__ = ["Slice"]


class Slice(InferenceSurjection):
    r"""Keep the first ``num_keep`` entries along dimension 1, drop the rest.

    Forward: ``x = (z, d)`` with ``z = x[:, :k]``; contribution ``V = log p(d | z)``.
    Inverse: ``x = (z, d)`` with ``d ~ p(· | z)`` (or its mean). ``forward(inverse(z)) = z``
    holds by construction, so the likelihood is exact.

    ``inverse_density``: ``"normal"`` (``N(0, I)``), ``"diagonal"`` (learned diagonal normal)
    or ``"conditional"`` (normal with mean and scale predicted from ``z`` by a small network of
    width ``hidden``). With ``context_features=k`` (``"conditional"`` only) that network also sees
    the flow context ``a`` (``(B, k)``): ``p(d | z, a)``, with ``a`` concatenated to ``z`` for
    vectors and broadcast over positions as extra channels for maps; every call then needs a
    context of shape ``(B, k)``.
    ``in_shape`` is the event shape, e.g. ``(D,)`` or ``(C, H, W)`` (channels are sliced).
    """

    def __init__(
        self,
        in_shape: int | tuple[int, ...],
        num_keep: int,
        *,
        inverse_density: InverseDensityKind = "normal",
        hidden: int = 64,
        context_features: int | None = None,
    ) -> None:
        super().__init__()
        self._in = _checks.shape("Slice", "in_shape", in_shape)
        if self._in[0] < 2:
            raise ValueError(f"Slice: in_shape must have at least 2 channels to slice, got {self._in}")
        self.num_keep = _checks.integer("Slice", "num_keep", num_keep, minimum=1, maximum=self._in[0] - 1)
        self._out = (num_keep, *self._in[1:])
        drop = (self._in[0] - num_keep, *self._in[1:])
        self.inverse_density = make_inverse_density(inverse_density, drop, self._out, hidden=hidden,
                                                    context_features=context_features, owner="Slice")
        self.context_features = context_features

    def extra_repr(self) -> str:
        out = f"in_shape={self._in}, num_keep={self.num_keep}"
        return out if self.context_features is None else out + f", context_features={self.context_features}"

    @property
    def in_shape(self) -> Shape:
        return self._in

    @property
    def out_shape(self) -> Shape:
        return self._out

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_context(self, context, self.context_features, x.shape[0])
        z, d = x[:, : self.num_keep], x[:, self.num_keep :]
        return z, self.inverse_density.log_prob(d, z, context)

    def _inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool) -> Tensor:
        check_context(self, context, self.context_features, z.shape[0])
        d = self.inverse_density.draw(z, context, mean=mean)
        return torch.cat([z, d], dim=1)
