r"""Flowified average pooling: ``nn.AvgPool2d(k)`` as an exact dimension-reducing linear map.

Average pooling is linear: every ``k_h × k_w`` patch (per channel) becomes its mean. In the
orthonormal basis of a patch made of the unit diagonal ``1/√n`` (``n = k_h k_w``) and a basis
``Q`` of its orthogonal complement, the mean keeps one coordinate and scales it by ``1/√n``; the
``n − 1`` others are dropped and, as for the reducing flowified ``Linear`` (DESIGN.md §2), get an
inverse density.
"""

from __future__ import annotations

import functools
import math
from typing import get_args

import torch
from torch import Tensor

from survae_flowify import _checks
from survae_flowify.algebra.transform import InferenceSurjection, Shape
from survae_flowify.distributions.conditional import InverseDensityKind, make_inverse_density

__all__ = ["AvgPool2d", "helmert_basis"]


def helmert_basis(n: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""``Q ∈ ℝ^{n × (n−1)}``, an orthonormal basis of the complement of ``(1, …, 1)``.

    Column ``j`` (``j = 1 … n−1``) is ``(1, …, 1, −j, 0, …, 0)/√(j(j+1))`` with ``j`` ones (the
    Helmert contrasts): ``QᵀQ = I`` and ``1ᵀQ = 0``, in closed form.
    """
    q = torch.zeros(n, n - 1, dtype=dtype)
    for j in range(1, n):
        q[:j, j - 1] = 1.0
        q[j, j - 1] = -float(j)
        q[:, j - 1] /= math.sqrt(j * (j + 1))
    return q


@functools.lru_cache(maxsize=64)
def _basis(n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """:func:`helmert_basis` computed once per size, dtype and device (built in float64 and
    rounded once: a buffer moved float32 → float64 would keep float32's rounding)."""
    return helmert_basis(n).to(device=device, dtype=dtype)


class AvgPool2d(InferenceSurjection):
    r"""``(B, C, H, W) → (B, C, H/k_h, W/k_w)``: the mean of every non-overlapping patch.

    With ``p ∈ ℝⁿ`` a patch (``n = k_h k_w``) of channel ``c`` at output position ``l``:

    .. math:: z = \tfrac1n \mathbf 1^\top p = s/\sqrt n,\quad s = \mathbf 1^\top p/\sqrt n,
              \qquad d = Q^\top p \in ℝ^{n-1},

    and ``p ↦ (s, d)`` is a rotation, so

    .. math:: \log p(x) = \log p(z) + V,\qquad V = -\tfrac12 \log n \cdot C H' W' + \log p(d \mid z),

    exact (``d`` is the map ``(B, C(n−1), H', W')`` of every patch's dropped coordinates). The
    inverse samples ``d ~ p(· | z)`` (or takes its mean) and returns ``p = z·1 + Q d``, whose
    mean is ``z`` (the right-inverse condition). ``inverse_density``: ``"normal"`` (``N(0, I)``,
    the default), ``"diagonal"`` (learned per channel) or ``"conditional"`` (predicted from ``z``
    by a small convolutional network of width ``hidden``).

    ``kernel_size``: an int or ``(k_h, k_w)``; the stride is the kernel size, and ``H``, ``W``
    must be multiples of it (``nn.AvgPool2d`` would drop the remainder, which no flow can).
    ``in_channels`` is required (the inverse density needs it). Under
    :func:`survae_flowify.noise_off` nothing changes: the forward is deterministic and equals
    ``F.avg_pool2d(x, kernel_size)``.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        *,
        in_channels: int,
        inverse_density: InverseDensityKind = "normal",
        hidden: int = 64,
    ) -> None:
        super().__init__()
        kernel = _checks.shape("AvgPool2d", "kernel_size", kernel_size)
        if len(kernel) == 1:
            kernel = kernel * 2
        if len(kernel) != 2 or math.prod(kernel) < 2:  # type: ignore[arg-type]
            raise ValueError(f"AvgPool2d: kernel_size must be an int or (k_h, k_w) covering at least two "
                             f"pixels, got {kernel_size!r}")
        self.kernel_size: tuple[int, int] = kernel  # type: ignore[assignment]
        self.in_channels = _checks.positive_int("AvgPool2d", "in_channels", in_channels)
        _checks.choice("AvgPool2d", "inverse_density", inverse_density, get_args(InverseDensityKind))
        n = math.prod(self.kernel_size)
        self.inverse_density = make_inverse_density(
            inverse_density, (self.in_channels * (n - 1), None, None), (self.in_channels, None, None),
            hidden=hidden, owner="AvgPool2d",
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, in_channels={self.in_channels}"

    @property
    def in_shape(self) -> Shape:
        return (self.in_channels, None, None)

    @property
    def out_shape(self) -> Shape:
        return (self.in_channels, None, None)

    def _patches(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) → (B, C, H', W', n)``."""
        b, c, h, w = x.shape
        kh, kw = self.kernel_size
        if h % kh or w % kw:
            raise ValueError(f"AvgPool2d({self.extra_repr()}): expected H and W that are multiples of the "
                             f"kernel, got {h}×{w} (pooling would drop pixels, which no flow can)")
        return x.reshape(b, c, h // kh, kh, w // kw, kw).permute(0, 1, 2, 4, 3, 5).reshape(
            b, c, h // kh, w // kw, kh * kw)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = self._patches(x)
        b, c, h, w, n = p.shape
        z = p.mean(-1)
        d = (p @ _basis(n, x.dtype, x.device)).permute(0, 1, 4, 2, 3).reshape(b, c * (n - 1), h, w)
        log_det = x.new_full((b,), -0.5 * math.log(n) * c * h * w)
        return z, log_det + self.inverse_density.log_prob(d, z)

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        b, c, h, w = z.shape
        kh, kw = self.kernel_size
        n = kh * kw
        d = self.inverse_density.draw(z, mean=mean).reshape(b, c, n - 1, h, w).permute(0, 1, 3, 4, 2)
        p = z.unsqueeze(-1) + d @ _basis(n, z.dtype, z.device).T
        return p.reshape(b, c, h, w, kh, kw).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h * kh, w * kw)
