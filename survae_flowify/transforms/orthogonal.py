r"""Noise orthogonal to the diagonal, for coordinate repetition and convolution unfolding.

A value ``p`` copied into ``N`` places is embedded as ``v = p·1_N + u`` with ``u ⊥ 1_N``.
Writing ``u = B w`` for an orthonormal basis ``B`` of the complement of the diagonal, the map
``(p, w) ↦ v`` has Jacobian ``[1_N, B]`` with ``|det| = √N`` (``1_N`` has length ``√N``), so the
contribution of one value is ``½ log N − log q(w)`` and ``‖w‖ = ‖u‖`` (paper eq. 18).

* normal noise: ``w ~ N(0, s² I_{N−1})``, sampled as a centred Gaussian (the pseudocode's
  direction-uniform-on-the-sphere times a chi amplitude has the same law);
  ``log q = −‖u‖²/(2s²) − (N−1)(log s + ½ log 2π)``.
* uniform noise: ``w`` uniform on the ``(N−1)``-ball of radius ``s``: a uniform direction
  times ``s·U^{1/(N−1)}``; ``log q = −log Vol_{N−1}(s)``.

Values with ``N = 1`` get no noise and contribute 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["ball_log_volume", "log_q_orthogonal", "sample_repeat_noise"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def ball_log_volume(m: Tensor, log_radius: Tensor) -> Tensor:
    """``log Vol`` of the ``m``-ball of radius ``exp(log_radius)`` (``m`` may be a tensor)."""
    return 0.5 * m * math.log(math.pi) + m * log_radius - torch.lgamma(0.5 * m + 1)


def log_q_orthogonal(sq_norm: Tensor, m: Tensor, log_scale: Tensor, kind: str) -> Tensor:
    """Per-value ``log q(w)`` for ``w`` in ``m = N−1`` dims with ``‖w‖² = sq_norm``.

    ``sq_norm``: ``(B, P)``; ``m``: ``(P,)`` (entries with ``m = 0`` give 0). Returns ``(B,)``.
    """
    m = m.to(sq_norm.dtype)
    if kind == "normal":
        per = -0.5 * sq_norm * torch.exp(-2 * log_scale) - m * (log_scale + _HALF_LOG_2PI)
    else:
        per = -ball_log_volume(m, log_scale).expand_as(sq_norm)
    return per.sum(1)


def sample_repeat_noise(
    shape: tuple[int, ...], copies_dim: int, log_scale: Tensor, kind: str, like: Tensor
) -> Tensor:
    """Noise of ``shape`` that sums to zero along ``copies_dim`` (``N = shape[copies_dim]``)."""
    g = torch.randn(shape, dtype=like.dtype, device=like.device)
    g = g - g.mean(copies_dim, keepdim=True)
    if kind == "normal":
        return g * torch.exp(log_scale)
    m = shape[copies_dim] - 1
    direction = g / g.square().sum(copies_dim, keepdim=True).sqrt().clamp_min(1e-30)
    amp_shape = list(shape)
    amp_shape[copies_dim] = 1
    radius = torch.rand(amp_shape, dtype=like.dtype, device=like.device) ** (1.0 / m)
    return direction * radius * torch.exp(log_scale)
