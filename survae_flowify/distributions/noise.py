"""Augmenting noise ``q(u)`` for generative surjections, with a learned scale.

``Noise("normal")``: ``u ~ N(0, s² I)``; ``Noise("uniform")``: ``u ~ U(−s, s)^m``. The scale
``s = exp(log_scale)`` is one learned scalar per layer.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from survae_flowify import _checks, _state

__all__ = ["NOISE_KINDS", "Noise", "NoiseKind", "check_noise"]

NoiseKind = Literal["normal", "uniform"]
NOISE_KINDS: tuple[NoiseKind, ...] = ("normal", "uniform")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def check_noise(layer: str, noise: object) -> NoiseKind:
    """``noise`` if it names a noise kind, else a ``ValueError`` naming ``layer``."""
    return _checks.choice(layer, "noise", noise, NOISE_KINDS)  # type: ignore[return-value]


class Noise(nn.Module):
    """Elementwise noise of learned scale; :meth:`sample` returns ``(u, log q(u))`` per sample."""

    def __init__(self, kind: NoiseKind = "normal", *, init_scale: float = 1.0) -> None:
        super().__init__()
        self.kind = check_noise("Noise", kind)
        scale = _checks.positive_float("Noise", "init_scale", init_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"

    @property
    def bounded(self) -> bool:
        return self.kind == "uniform"

    def sample(self, shape: tuple[int, ...], like: Tensor) -> tuple[Tensor, Tensor]:
        """Noise of shape ``shape`` (``shape[0]`` the batch), dtype/device of ``like``.

        Under :func:`survae_flowify.noise_off` the noise is zero and ``log q`` is reported as 0.
        """
        log_scale = self.log_scale.to(like.dtype)
        m = math.prod(shape[1:])
        if not _state.noise_enabled():
            return like.new_zeros(shape), like.new_zeros(shape[0])
        if self.kind == "normal":
            eps = torch.randn(shape, dtype=like.dtype, device=like.device)
            log_q = -0.5 * eps.flatten(1).square().sum(1) - m * (log_scale + _HALF_LOG_2PI)
        else:
            eps = 2 * torch.rand(shape, dtype=like.dtype, device=like.device) - 1
            log_q = (-m * (log_scale + math.log(2))).expand(shape[0])
        return eps * torch.exp(log_scale), log_q

    def log_prob(self, u: Tensor) -> Tensor:
        """``log q(u)`` summed per sample (``−inf`` outside the support of uniform noise)."""
        m = math.prod(u.shape[1:])
        log_scale = self.log_scale.to(u.dtype)
        if self.kind == "normal":
            eps = u * torch.exp(-log_scale)
            return -0.5 * eps.flatten(1).square().sum(1) - m * (log_scale + _HALF_LOG_2PI)
        inside = (u.abs() <= torch.exp(log_scale)).flatten(1).all(1)
        val = (-m * (log_scale + math.log(2))).expand(u.shape[0])
        return torch.where(inside, val, torch.full_like(val, -math.inf))
