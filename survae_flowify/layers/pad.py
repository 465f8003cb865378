r"""Flowified padding: the first step of a flowified convolution (paper §3.2).

A kernel of size ``k`` moved with stride ``s`` tiles an image of height ``H`` only when
``(H − k) % s == 0``. :class:`Pad` appends the fewest rows ``p ≥ 0`` (and columns ``q ≥ 0``) that
make it so, filled with noise of learned scale, so that no pixel is lost by the convolution. It
also adds a fixed border on every side (``padding``), the flowified form of ``nn.Conv2d``'s zero
padding: with the noise off the border is zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor

from survae_flowify import _checks
from survae_flowify.algebra.transform import GenerativeSurjection, Shape
from survae_flowify.distributions.noise import Noise, NoiseKind, check_noise

__all__ = ["Pad", "check_channels", "check_image_size", "check_kernel_stride", "check_padding", "padded_size"]

Padding = tuple[int, int, int, int]
"""``(left, right, top, bottom)``, the order of ``torch.nn.functional.pad``."""


def check_kernel_stride(layer: str, kernel_size: object, stride: object) -> tuple[int, int]:
    """Validate a square kernel and stride (ints) with ``1 ≤ stride ≤ kernel_size``.

    A stride larger than the kernel would skip pixels, which no flow can recover.
    """
    k = _checks.positive_int(layer, "kernel_size", kernel_size)
    s = _checks.positive_int(layer, "stride", stride)
    if s > k:
        raise ValueError(
            f"{layer}: stride ({s}) larger than kernel_size ({k}) would skip pixels; "
            "a flowified convolution needs stride <= kernel_size"
        )
    return k, s


def padded_size(size: int, kernel_size: int, stride: int) -> int:
    """The smallest ``size + p`` (``p ≥ 0``) with ``(size + p − kernel_size) % stride == 0``."""
    return size + (-(size - kernel_size)) % stride


def check_image_size(layer: str, image_size: object) -> tuple[int, int] | None:
    """``None``, or an int / ``(H, W)`` of positive ints (not bools) as ``(H, W)``."""
    if image_size is None:
        return None
    hw = _checks.shape(layer, "image_size", image_size)
    if len(hw) == 1:
        hw = hw * 2
    if len(hw) != 2:
        raise ValueError(f"{layer}: image_size must be an int or (H, W) of positive ints, got {image_size!r}")
    return hw  # type: ignore[return-value]


def check_padding(layer: str, padding: object) -> Padding:
    """A fixed border as ``(left, right, top, bottom)`` of non-negative ints.

    ``padding`` is an int (every side), ``(pad_h, pad_w)`` (``nn.Conv2d``'s convention: ``pad_h``
    rows on top and bottom, ``pad_w`` columns left and right) or ``(left, right, top, bottom)``
    (``F.pad``'s order).
    """
    expected = "an int >= 0, (pad_h, pad_w) or (left, right, top, bottom) of ints >= 0"
    sides = (padding,) * 4 if isinstance(padding, int) and not isinstance(padding, bool) else padding
    if isinstance(sides, (tuple, list)) and len(sides) == 2:
        sides = (sides[1], sides[1], sides[0], sides[0])
    if not isinstance(sides, (tuple, list)) or len(sides) != 4:
        raise ValueError(f"{layer}: padding must be {expected}, got {padding!r}")
    for value in sides:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{layer}: padding must be {expected}, got {padding!r}")
    return tuple(sides)  # type: ignore[return-value]


def check_channels(layer: str, in_channels: object) -> int | None:
    """``None`` (any number of channels) or a positive int."""
    return None if in_channels is None else _checks.positive_int(layer, "in_channels", in_channels)


class Pad(GenerativeSurjection):
    r"""Pad with noise: a fixed border on every side, then right/bottom so that the kernel tiles.

    Forward, ``x`` of shape ``(B, C, H, W)``, ``padding = (l, r, t, b)``: the image is placed at
    rows ``t … t+H−1`` and columns ``l … l+W−1`` of a ``(B, C, H'', W'')`` map with
    ``H'' = t + H + b + p`` and ``W'' = l + W + r + q``, where ``p`` is the smallest ``p ≥ 0`` with
    ``(t + H + b + p − k) % s == 0`` (likewise ``q``). The ``n = C(H''W'' − HW)`` new entries ``u``
    are drawn from ``q(u)``: ``N(0, σ² I)`` (``noise="normal"``, the default, appendix B) or
    ``U(−σ, σ)^n`` (``"uniform"``), ``σ`` learned.

    Contribution: ``V = −log q(u)`` (the embedding ``x ↦ (x, 0)`` preserves volume); under
    :func:`survae_flowify.noise_off` the padding is zeros and ``V = 0``, so ``Pad(k, s,
    padding=P)`` then computes ``F.pad(x, (P, P + q, P, P + p))``, the zero padding of
    ``nn.Conv2d(..., padding=P)``. Inverse: crop back to ``H × W``.

    Example: MNIST ``28 × 28`` with ``k = 3, s = 2`` is padded to ``29 × 29`` (output ``14 × 14``);
    CIFAR ``32 → 33`` (``16``); ``7 × 7`` needs no padding (output ``3 × 3``). When no padding is
    needed the layer is the identity with ``V = 0``; :attr:`exact` says so when it always is
    (no fixed border, and ``stride = 1`` or an ``image_size`` that needs no padding).

    ``padding``: an int (every side), ``(pad_h, pad_w)`` as in ``nn.Conv2d``, or ``(left, right,
    top, bottom)`` as in ``F.pad``; default 0. The padded size does not determine ``H`` when
    ``s > 1`` (``s`` input sizes pad to the same size), so the inverse then needs
    ``image_size=(H, W)``; without it the forward accepts any size and the inverse raises an
    error. ``in_channels`` (optional) makes the input check stricter. Images smaller than the
    kernel (after the fixed border) are rejected.
    """

    def __init__(
        self,
        kernel_size: int,
        stride: int,
        *,
        noise: NoiseKind = "normal",
        in_channels: int | None = None,
        image_size: int | tuple[int, int] | None = None,
        padding: int | tuple[int, ...] = 0,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride = check_kernel_stride("Pad", kernel_size, stride)
        self.in_channels = check_channels("Pad", in_channels)
        self.image_size = check_image_size("Pad", image_size)
        self.padding = check_padding("Pad", padding)
        self.kind = check_noise("Pad", noise)
        init_scale = _checks.positive_float("Pad", "init_scale", init_scale)
        if self.image_size is not None:
            self._check_size(*self.image_size)
        # A Pad that never pads holds no noise scale: a parameter that never receives a gradient
        # would force DDP's find_unused_parameters (and a useless optimiser state).
        self.noise = None if self.exact else Noise(self.kind, init_scale=init_scale)

    def extra_repr(self) -> str:
        out = f"kernel_size={self.kernel_size}, stride={self.stride}, noise={self.kind!r}"
        if any(self.padding):
            out += f", padding={self.padding}"
        if self.in_channels is not None:
            out += f", in_channels={self.in_channels}"
        if self.image_size is not None:
            out += f", image_size={self.image_size}"
        return out

    @property
    def exact(self) -> bool:  # type: ignore[override]
        """True when no input is ever padded: no fixed border, and ``stride == 1`` or an
        ``image_size`` that needs no padding."""
        if any(self.padding):
            return False
        if self.image_size is not None:
            return self.padded_size(self.image_size) == self.image_size
        return self.stride == 1

    @property
    def bounded_noise(self) -> bool:
        return self.kind == "uniform" and not self.exact

    @property
    def in_shape(self) -> Shape:
        hw = self.image_size or (None, None)
        return (self.in_channels, *hw)

    @property
    def out_shape(self) -> Shape:
        if self.image_size is None:
            return (self.in_channels, None, None)
        return (self.in_channels, *self.padded_size(self.image_size))

    def padded_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(H'', W'')`` for an input of size ``(H, W)``: the fixed border, then the tiling rows."""
        h, w = image_size
        self._check_size(h, w)
        left, right, top, bottom = self.padding
        k, s = self.kernel_size, self.stride
        return padded_size(top + h + bottom, k, s), padded_size(left + w + right, k, s)

    def _check_size(self, h: int, w: int) -> None:
        left, right, top, bottom = self.padding
        if top + h + bottom < self.kernel_size or left + w + right < self.kernel_size:
            raise ValueError(
                f"Pad({self.extra_repr()}): expected an image at least {self.kernel_size}×"
                f"{self.kernel_size} (the kernel size) after the fixed border, got {h}×{w}"
            )

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        hp, wp = self.padded_size((h, w))
        if (hp, wp) == (h, w):
            return x, x.new_zeros(b)
        left, _, top, _ = self.padding
        right, bottom = wp - w - left, hp - h - top  # the fixed border plus the tiling rows
        # One noise draw for the whole border, cut into its four strips: right and bottom first,
        # so that a layer without a fixed border draws as it always did.
        sizes = [c * h * right, c * (hp - h - top) * wp, c * top * wp, c * h * left]
        u, log_q = self.noise.sample((b, sum(sizes)), x)
        u_right, u_bottom, u_top, u_left = u.split(sizes, dim=1)
        middle = torch.cat([u_left.reshape(b, c, h, left), x, u_right.reshape(b, c, h, right)], dim=3)
        strips = [u_top.reshape(b, c, top, wp), middle, u_bottom.reshape(b, c, bottom, wp)]
        return torch.cat(strips, dim=2), -log_q

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        left, right, top, bottom = self.padding
        if self.image_size is not None:
            h, w = self.image_size
        elif self.stride == 1:  # no tiling rows: the fixed border alone
            h, w = z.shape[2] - top - bottom, z.shape[3] - left - right
        else:
            raise ValueError(
                f"Pad({self.extra_repr()}): cannot invert without the input size: with stride "
                f"{self.stride}, {self.stride} input heights pad to the same height {z.shape[2]}; "
                "construct it with image_size=(H, W)"
            )
        return z[:, :, top:top + h, left:left + w]
