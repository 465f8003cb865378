r"""``Squeeze``: space-to-depth, ``(C, H, W) → (C·f², H/f, W/f)`` (contribution 0)."""

from __future__ import annotations

from torch import Tensor

from survae_flowify import _checks, _state
from survae_flowify.algebra.transform import Bijection, Shape, _describe

__all__ = ["Squeeze"]


class Squeeze(Bijection):
    r"""Space-to-depth by a factor ``f`` (RealNVP §3.6, Glow): each ``f × f`` patch becomes channels.

    .. math:: z_{b,\; c f^2 + i f + j,\; h,\; w} = x_{b,\; c,\; h f + i,\; w f + j},
              \qquad 0 \le i, j < f,

    so ``(B, C, H, W) → (B, C f², H/f, W/f)``: the ``f²`` entries of one patch of channel ``c``
    become the consecutive channels ``c f², …, c f² + f² − 1``, in row-major order over the
    patch. A permutation of the entries, so ``V = 0``; the inverse (depth-to-space) puts them
    back. ``H`` and ``W`` must be divisible by ``f`` (and, for the inverse, the channels by
    ``f²``).
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = _checks.positive_int("Squeeze", "factor", factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    @property
    def in_shape(self) -> Shape:
        return (None, None, None)

    @property
    def out_shape(self) -> Shape:
        return (None, None, None)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        f = self.factor
        if _state.validation_enabled() and (h % f or w % f):
            raise ValueError(
                f"{_describe(self)}: expected x of shape (batch, C, H, W) with H and W divisible "
                f"by the factor {f}, got {tuple(x.shape)} (H={h}, W={w})"
            )
        z = x.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4)
        return z.reshape(b, c * f * f, h // f, w // f), x.new_zeros(b)

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        b, c, h, w = z.shape
        f = self.factor
        if _state.validation_enabled() and c % (f * f):
            raise ValueError(
                f"{_describe(self)}: expected z of shape (batch, C, H, W) with C divisible by "
                f"factor² = {f * f}, got {tuple(z.shape)} (C={c})"
            )
        x = z.reshape(b, c // (f * f), f, f, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c // (f * f), h * f, w * f)
