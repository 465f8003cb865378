"""The augmenting generative surjection."""

from __future__ import annotations

import torch
from torch import Tensor

from survae_flowify import _checks
from survae_flowify.algebra.transform import GenerativeSurjection, Shape
from survae_flowify.distributions.noise import NOISE_KINDS, Noise, NoiseKind

__all__ = ["Augment"]


class Augment(GenerativeSurjection):
    r"""Append ``extra`` entries of noise along dimension 1: ``z = (x, u)``, ``u ~ q(u)``.

    ``q`` is ``N(0, s²I)`` (``noise="normal"``, default) or ``U(−s, s)`` (``"uniform"``) with a
    learned scale ``s``. Contribution ``V = −log q(u)`` (a lower bound; the gap is
    ``KL(q(u) ‖ p(u | x))``). Inverse: ``x = z[:, :D]``.
    """

    def __init__(
        self,
        in_shape: int | tuple[int, ...],
        extra: int,
        *,
        noise: NoiseKind = "normal",
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self._in = _checks.shape("Augment", "in_shape", in_shape)
        self.extra = _checks.positive_int("Augment", "extra", extra)
        self._out = (self._in[0] + extra, *self._in[1:])
        _checks.choice("Augment", "noise", noise, NOISE_KINDS)
        self.noise = Noise(noise, init_scale=_checks.positive_float("Augment", "init_scale", init_scale))

    def extra_repr(self) -> str:
        return f"in_shape={self._in}, extra={self.extra}, noise={self.noise.kind!r}"

    @property
    def bounded_noise(self) -> bool:
        return self.noise.bounded

    @property
    def in_shape(self) -> Shape:
        return self._in

    @property
    def out_shape(self) -> Shape:
        return self._out

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u, log_q = self.noise.sample((x.shape[0], self.extra, *self._in[1:]), x)
        return torch.cat([x, u], dim=1), -log_q

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return z[:, : self._in[0]]
