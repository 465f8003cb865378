r"""The VAE as a stochastic transform (Nielsen et al., 2020, §2.3: SurVAE's stochastic layer)."""

from __future__ import annotations

import math
from typing import ClassVar

from torch import Tensor, nn

from survae_flowify import _state
from survae_flowify.algebra.transform import Shape, Transform
from survae_flowify.distributions import encoders

__all__ = ["VAE"]


class VAE(Transform):
    r"""A stochastic map ``x ↦ z`` with an encoder ``q(z | x)`` and a decoder ``p(x | z)``.

    Forward: ``z ~ q(z | x)`` (reparametrised), contribution

    $$ V(x, z) = \log p(x \mid z) - \log q(z \mid x), $$

    so that ``log p(z) + V`` is the VAE's ELBO, a lower bound on ``log p(x)`` whose gap is
    ``KL(q(z | x) ‖ p(z | x))``; importance weighting (``Flow.log_prob(x, num_samples=K)``) is
    the IWAE bound. Inverse: ``x ~ p(x | z)``, or with ``mean=True`` the decoder's mean (for a
    Flow decoder: its base mean pushed through its mean inverse). Under
    :func:`survae_flowify.noise_off` the forward takes the encoder's mean instead of a draw.

    ``encoder``: a density over ``z`` conditioned on ``x`` flattened to ``(B, D_x)``;
    ``decoder``: a density over ``x`` conditioned on ``z`` flattened to ``(B, D_z)``. Each is a
    :class:`~survae_flowify.ConditionalNormal` or an exact conditional
    :class:`~survae_flowify.Flow` (``context_features`` = the other side's size, or an
    ``embedding`` of it). Shapes: ``in_shape`` is the decoder's event shape, ``out_shape`` the
    encoder's; e.g. ``VAE(ConditionalNormal(2, 5), ConditionalNormal(5, 2))`` maps ``(B, 5)`` to
    ``(B, 2)``. Kind: a bound, stochastic in both directions.
    """

    exact = False
    stochastic_forward = True
    stochastic_inverse = True
    # Encoder and decoder see this layer's input and output, not the flow's context.
    private_context: ClassVar[bool] = True

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self._z_shape = encoders.density_shape("VAE", "encoder", encoder)
        self._x_shape = encoders.density_shape("VAE", "decoder", decoder)
        encoders.check_density("VAE", "encoder", encoder, context_features=math.prod(self._x_shape))
        encoders.check_density("VAE", "decoder", decoder, context_features=math.prod(self._z_shape))
        self.encoder = encoder
        self.decoder = decoder

    def extra_repr(self) -> str:
        return f"in_shape={self._x_shape}, out_shape={self._z_shape}"

    @property
    def in_shape(self) -> Shape:
        return self._x_shape

    @property
    def out_shape(self) -> Shape:
        return self._z_shape

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cx = x.flatten(1)
        if _state.noise_enabled():
            z, log_q = encoders.draw(self.encoder, cx, self._z_shape)
        else:
            z = encoders.mode(self.encoder, cx, self._z_shape)
            log_q = encoders.log_prob(self.encoder, z, cx)
        return z, encoders.log_prob(self.decoder, x, z.flatten(1)) - log_q

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return encoders.sample(self.decoder, z.flatten(1), self._x_shape, mean=mean)
