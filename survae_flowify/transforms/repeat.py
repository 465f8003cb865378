"""Coordinate repetition: copies plus noise orthogonal to the diagonal."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify import _checks, _state
from survae_flowify.algebra.transform import GenerativeSurjection, Shape
from survae_flowify.distributions.noise import NOISE_KINDS, NoiseKind
from survae_flowify.transforms.orthogonal import log_q_orthogonal, sample_repeat_noise

__all__ = ["Repeat"]


class Repeat(GenerativeSurjection):
    r"""``x ↦ (x + u_1, …, x + u_N)`` concatenated along dimension 1, ``Σ_k u_k = 0``.

    Every entry of ``x`` (event shape ``(C, …)``) is copied ``N = copies`` times; the noise is
    orthogonal to the diagonal (see :mod:`survae_flowify.transforms.orthogonal`), normal or
    uniform on the ball, with a learned scale. Output ``(B, N·C, …)``.
    Contribution ``V = ½ D log N − Σ log q(w)``, ``D`` the number of entries of ``x``.
    Inverse: the mean of the copies.
    """

    def __init__(
        self,
        in_shape: int | tuple[int, ...],
        copies: int = 2,
        *,
        noise: NoiseKind = "normal",
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self._in = _checks.shape("Repeat", "in_shape", in_shape)
        self.copies = _checks.integer("Repeat", "copies", copies, minimum=2)
        self.kind = _checks.choice("Repeat", "noise", noise, NOISE_KINDS)
        scale = _checks.positive_float("Repeat", "init_scale", init_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def extra_repr(self) -> str:
        return f"in_shape={self._in}, copies={self.copies}, noise={self.kind!r}"

    @property
    def bounded_noise(self) -> bool:
        return self.kind == "uniform"

    @property
    def in_shape(self) -> Shape:
        return self._in

    @property
    def out_shape(self) -> Shape:
        return (self.copies * self._in[0], *self._in[1:])

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, n, d = x.shape[0], self.copies, math.prod(x.shape[1:])
        stacked = x.unsqueeze(1).expand(b, n, *x.shape[1:])
        log_det = x.new_full((b,), 0.5 * d * math.log(n))
        if not _state.noise_enabled():
            return stacked.reshape(b, n * x.shape[1], *x.shape[2:]), log_det
        log_scale = self.log_scale.to(x.dtype)
        u = sample_repeat_noise(tuple(stacked.shape), 1, log_scale, self.kind, x)
        sq = u.square().sum(1).reshape(b, d)
        m = x.new_full((d,), n - 1)
        log_q = log_q_orthogonal(sq, m, log_scale, self.kind)
        return (stacked + u).reshape(b, n * x.shape[1], *x.shape[2:]), log_det - log_q

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        b = z.shape[0]
        return z.reshape(b, self.copies, *self._in).mean(1)
