r"""Flowified padding: the first step of a flowified convolution (paper §3.2).

A kernel of size ``k`` moved with stride ``s`` tiles an image of height ``H`` only when
``(H − k) % s == 0``. :class:`Pad` appends the fewest rows ``p ≥ 0`` (and columns ``q ≥ 0``) that
make it so, filled with noise of learned scale, so that no pixel is lost by the convolution.
"""

from __future__ import annotations

import torch
from torch import Tensor

from survae_flowify import _checks
from survae_flowify.algebra.transform import GenerativeSurjection, Shape
from survae_flowify.distributions.noise import Noise, NoiseKind, check_noise

__all__ = ["Pad", "check_channels", "check_image_size", "check_kernel_stride", "padded_size"]


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


def check_channels(layer: str, in_channels: object) -> int | None:
    """``None`` (any number of channels) or a positive int."""
    return None if in_channels is None else _checks.positive_int(layer, "in_channels", in_channels)


class Pad(GenerativeSurjection):
    r"""Pad right and bottom with noise so that a ``kernel_size``/``stride`` kernel tiles the image.

    Forward, ``x`` of shape ``(B, C, H, W)``:
    ``z = [[x, u_r], [u_b]]`` of shape ``(B, C, H + p, W + q)``, where ``p`` is the smallest
    ``p ≥ 0`` with ``(H + p − k) % s == 0`` (likewise ``q`` for ``W``) and the ``n = C((H+p)(W+q) − HW)``
    new entries ``u = (u_r, u_b)`` are drawn from ``q(u)``: ``N(0, σ² I)`` (``noise="normal"``, the
    default, appendix B) or ``U(−σ, σ)^n`` (``"uniform"``), ``σ`` learned.

    Contribution: ``V = −log q(u)`` (the embedding ``x ↦ (x, 0)`` preserves volume); under
    :func:`survae_flowify.noise_off` the padding is zeros and ``V = 0``.
    Inverse: crop back to ``H × W``.

    Example: MNIST ``28 × 28`` with ``k = 3, s = 2`` is padded to ``29 × 29`` (output ``14 × 14``);
    CIFAR ``32 → 33`` (``16``); ``7 × 7`` needs no padding (output ``3 × 3``). When no padding is
    needed the layer is the identity with ``V = 0``; :attr:`exact` says so when it always is
    (``stride = 1``, or an ``image_size`` that needs no padding).

    The padded size does not determine ``H`` when ``s > 1`` (``s`` input sizes pad to the same
    size), so the inverse needs ``image_size=(H, W)``; without it the forward accepts any size and
    the inverse raises an error. ``in_channels`` (optional) makes the input check stricter.
    Images smaller than the kernel are rejected.
    """

    def __init__(
        self,
        kernel_size: int,
        stride: int,
        *,
        noise: NoiseKind = "normal",
        in_channels: int | None = None,
        image_size: int | tuple[int, int] | None = None,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride = check_kernel_stride("Pad", kernel_size, stride)
        self.in_channels = check_channels("Pad", in_channels)
        self.image_size = check_image_size("Pad", image_size)
        self.kind = check_noise("Pad", noise)
        init_scale = _checks.positive_float("Pad", "init_scale", init_scale)
        if self.image_size is not None:
            self._check_size(*self.image_size)
        # A Pad that never pads holds no noise scale: a parameter that never receives a gradient
        # would force DDP's find_unused_parameters (and a useless optimiser state).
        self.noise = None if self.exact else Noise(self.kind, init_scale=init_scale)

    def extra_repr(self) -> str:
        out = f"kernel_size={self.kernel_size}, stride={self.stride}, noise={self.kind!r}"
        if self.in_channels is not None:
            out += f", in_channels={self.in_channels}"
        if self.image_size is not None:
            out += f", image_size={self.image_size}"
        return out

    @property
    def exact(self) -> bool:  # type: ignore[override]
        """True when no input is ever padded: ``stride == 1``, or ``image_size`` needs no padding."""
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
        """``(H + p, W + q)`` for an input of size ``(H, W)``."""
        h, w = image_size
        self._check_size(h, w)
        return padded_size(h, self.kernel_size, self.stride), padded_size(w, self.kernel_size, self.stride)

    def _check_size(self, h: int, w: int) -> None:
        if h < self.kernel_size or w < self.kernel_size:
            raise ValueError(
                f"Pad({self.extra_repr()}): expected an image at least {self.kernel_size}×"
                f"{self.kernel_size} (the kernel size), got {h}×{w}"
            )

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        hp, wp = self.padded_size((h, w))
        if (hp, wp) == (h, w):
            return x, x.new_zeros(b)
        n_right, n_bottom = c * h * (wp - w), c * (hp - h) * wp
        u, log_q = self.noise.sample((b, n_right + n_bottom), x)
        right = u[:, :n_right].reshape(b, c, h, wp - w)
        bottom = u[:, n_right:].reshape(b, c, hp - h, wp)
        return torch.cat([torch.cat([x, right], dim=3), bottom], dim=2), -log_q

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        if self.image_size is not None:
            h, w = self.image_size
            return z[:, :, :h, :w]
        if self.exact:
            return z
        raise ValueError(
            f"Pad({self.extra_repr()}): cannot invert without the input size: with stride "
            f"{self.stride}, {self.stride} input heights pad to the same height {z.shape[2]}; construct "
            "it with image_size=(H, W)"
        )
