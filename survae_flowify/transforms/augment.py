"""The augmenting generative surjection."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from survae_flowify import _checks, _state
from survae_flowify.algebra.transform import GenerativeSurjection, Shape
from survae_flowify.distributions import encoders
from survae_flowify.distributions.noise import NOISE_KINDS, Noise, NoiseKind

__all__ = ["Augment"]


class Augment(GenerativeSurjection):
    r"""Append ``extra`` entries of noise along dimension 1: ``z = (x, u)``, ``u ~ q(u | x)``.

    ``noise`` chooses ``q``:

    * ``"normal"`` (default): ``N(0, s²I)``, or ``"uniform"``: ``U(−s, s)``, with one learned
      scale ``s`` (``init_scale``, default 1), independent of ``x``;
    * a conditional density over ``u`` (the CIF recipe, Cornish et al., 2020): a
      :class:`~survae_flowify.ConditionalNormal` or an exact conditional
      :class:`~survae_flowify.Flow` with event shape ``(extra, *in_shape[1:])`` and context
      ``x`` flattened to ``(B, D)`` (``context_features=D``, or a Flow ``embedding`` of it).
      Learning ``q(u | x)`` is how the augmentation gap is learned away.

    Contribution ``V = −log q(u | x)``, a lower bound whose gap is ``KL(q(u | x) ‖ p(u | x))``.
    Inverse: ``x = z[:, :D]``. Under :func:`survae_flowify.noise_off`, ``u = 0`` and ``V = 0``.
    """

    # A conditional q is conditioned on this layer's input, not on the flow's context.
    private_context: ClassVar[bool] = True

    def __init__(
        self,
        in_shape: int | tuple[int, ...],
        extra: int,
        *,
        noise: NoiseKind | nn.Module = "normal",
        init_scale: float | None = None,
    ) -> None:
        super().__init__()
        self._in = _checks.shape("Augment", "in_shape", in_shape)
        self.extra = _checks.positive_int("Augment", "extra", extra)
        self._out = (self._in[0] + extra, *self._in[1:])
        self._noise_shape = (extra, *self._in[1:])
        if isinstance(noise, str):
            _checks.choice("Augment", "noise", noise, NOISE_KINDS)
            scale = 1.0 if init_scale is None else _checks.positive_float("Augment", "init_scale", init_scale)
            self.noise: nn.Module = Noise(noise, init_scale=scale)
            self.conditional = False
            return
        if init_scale is not None:
            raise ValueError("Augment: init_scale sets the scale of noise='normal' or 'uniform'; a "
                             f"conditional noise density has its own (got init_scale={init_scale!r})")
        if not isinstance(noise, nn.Module):
            raise TypeError(f"Augment: noise must be 'normal', 'uniform', a ConditionalNormal or a "
                            f"conditional Flow, got {type(noise).__name__}")
        event = encoders.check_density("Augment", "noise", noise, context_features=math.prod(self._in))
        if event != self._noise_shape:
            raise ValueError(f"Augment: the noise density must have event shape {self._noise_shape} "
                             f"(extra, *in_shape[1:]), got {event}")
        self.noise = noise
        self.conditional = True

    def extra_repr(self) -> str:
        kind = type(self.noise).__name__ if self.conditional else repr(self.noise.kind)
        return f"in_shape={self._in}, extra={self.extra}, noise={kind}"

    @property
    def bounded_noise(self) -> bool:
        return not self.conditional and self.noise.bounded

    @property
    def in_shape(self) -> Shape:
        return self._in

    @property
    def out_shape(self) -> Shape:
        return self._out

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not self.conditional:
            u, log_q = self.noise.sample((x.shape[0], *self._noise_shape), x)
        elif _state.noise_enabled():
            u, log_q = encoders.draw(self.noise, x.flatten(1), self._noise_shape)
        else:
            u, log_q = x.new_zeros((x.shape[0], *self._noise_shape)), x.new_zeros(x.shape[0])
        return torch.cat([x, u], dim=1), -log_q

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return z[:, : self._in[0]]
