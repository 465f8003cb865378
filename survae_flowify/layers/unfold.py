r"""Flowified unfolding: the second step of a flowified convolution (paper §3.2, appendix fig. 5).

Unfolding an image into its (possibly overlapping) patches copies every pixel ``p`` into the
``N_p`` patches that contain it, a diagonal embedding ``p ↦ p·1_{N_p}``. To make it a flow, noise
orthogonal to the diagonal fills the other ``N_p − 1`` directions; see
:mod:`survae_flowify.transforms.orthogonal` for the volume bookkeeping (paper eq. 18).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify import _checks, _state
from survae_flowify.algebra.transform import GenerativeSurjection, Shape
from survae_flowify.distributions.noise import NoiseKind, check_noise
from survae_flowify.layers.pad import check_channels, check_image_size, check_kernel_stride
from survae_flowify.transforms.orthogonal import log_q_orthogonal

__all__ = ["Unfold", "fold", "multiplicities", "patches"]


def _counts(size: int, kernel_size: int, stride: int, like: Tensor) -> Tensor:
    """Along one axis: the number of windows ``[i·s, i·s + k)``, ``0 ≤ i < (size − k)//s + 1``,
    that contain each position ``h``: ``i`` runs from ``⌈(h − k + 1)/s⌉`` to ``⌊h/s⌋``, clipped."""
    h = torch.arange(size, device=like.device)
    last = (size - kernel_size) // stride
    hi = torch.div(h, stride, rounding_mode="floor").clamp(max=last)
    lo = torch.div(h - kernel_size + stride, stride, rounding_mode="floor").clamp(min=0)
    return (hi - lo + 1).clamp(min=0).to(like.dtype)


def multiplicities(
    size: tuple[int, int], kernel_size: int, stride: int, *, like: Tensor | None = None
) -> Tensor:
    """``N = fold(unfold(1))``: in how many patches each pixel lies, shape ``(H, W)``.

    Computed in closed form, as the product of the counts along the two axes.
    """
    like = torch.empty(()) if like is None else like
    rows = _counts(size[0], kernel_size, stride, like)
    return torch.outer(rows, _counts(size[1], kernel_size, stride, like))


def patches(x: Tensor, kernel_size: int, stride: int) -> Tensor:
    """``torch.nn.functional.unfold`` as a map: ``(B, C, H, W) → (B, C·k², H', W')``.

    Channel ``c·k² + i·k + j`` at position ``(a, b)`` is pixel ``(c, a·s + i, b·s + j)``. The
    result is laid out batch last, ``(C·k², H', W', B)`` in memory, so that the rows
    ``(H'·W'·B, C·k²)`` a kernel applies to are a view (:class:`~survae_flowify.PatchLinear`).
    """
    return _windows(_batch_last(x), kernel_size, stride).permute(3, 0, 1, 2)


def fold(v: Tensor, size: tuple[int, int], kernel_size: int, stride: int) -> Tensor:
    """``torch.nn.functional.fold``, the adjoint of :func:`patches`: ``(B, C·k², H', W') →
    (B, C, H, W)``, every pixel the sum of its copies (laid out batch last)."""
    return _fold(_batch_last(v), tuple(size), kernel_size, stride).permute(3, 0, 1, 2)


# Batch last: every copy below moves runs of B contiguous numbers. F.unfold / F.fold loop over
# the batch in C++ and copy runs of W' numbers; with B = 256 these are 5-20× faster (measured
# on FCONV1-MNIST's shapes, one thread).
def _batch_last(x: Tensor) -> Tensor:
    """``(B, C, H, W) → (C, H, W, B)``, contiguous (a view when ``x`` is laid out so already)."""
    return x.permute(1, 2, 3, 0).contiguous()


def _windows(x: Tensor, k: int, s: int) -> Tensor:
    """``(C, H, W, B) → (C·k², H', W', B)``: the patches, one strided view and one copy."""
    return _Windows.apply(x, k, s)


def _copy_windows(x: Tensor, k: int, s: int) -> Tensor:
    windows = x.unfold(1, k, s).unfold(2, k, s)  # (C, H', W', B, k, k), a view
    c, out_h, out_w, b = windows.shape[:4]
    return windows.permute(0, 4, 5, 1, 2, 3).reshape(c * k * k, out_h, out_w, b)


class _Windows(torch.autograd.Function):
    """:func:`_copy_windows` with its adjoint :func:`_fold` as the backward: autograd's own
    backward of ``Tensor.unfold`` (``unfold_backward``) is ~10× slower here (measured)."""

    @staticmethod
    def forward(ctx, x: Tensor, k: int, s: int) -> Tensor:  # type: ignore[override]
        ctx.size, ctx.k, ctx.s = tuple(x.shape[1:3]), k, s
        return _copy_windows(x, k, s)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        return _fold(grad, ctx.size, ctx.k, ctx.s), None, None


def _fold(v: Tensor, size: tuple[int, int], k: int, s: int) -> Tensor:
    """``(C·k², H', W', B) → (C, H, W, B)``, the adjoint of :func:`_windows`: a permutation when
    the patches do not overlap, else one strided addition per kernel offset ``(i, j)``."""
    ck2, out_h, out_w, b = v.shape
    c = ck2 // (k * k)
    by_offset = v.reshape(c, k, k, out_h, out_w, b)
    if s == k and size == (out_h * k, out_w * k):
        return by_offset.permute(0, 3, 1, 4, 2, 5).reshape(c, *size, b)
    out = v.new_zeros(c, *size, b)
    rows, cols = s * (out_h - 1) + 1, s * (out_w - 1) + 1
    for i in range(k):
        for j in range(k):
            out[:, i:i + rows:s, j:j + cols:s] += by_offset[:, i, j]
    return out


class Unfold(GenerativeSurjection):
    r"""``(B, C, H, W) → (B, C·k², H', W')``: the patches of a ``k × k`` kernel moved with stride ``s``.

    ``H' = (H − k)/s + 1`` (likewise ``W'``); the input must be tiled exactly,
    ``(H − k) % s == 0`` (use :class:`~survae_flowify.layers.pad.Pad` first), and ``s ≤ k``. The
    channel order is that of :func:`torch.nn.functional.unfold`: ``(c, i, j)`` with ``c`` slowest.

    Forward: ``v = unfold(x) + u`` where, for every pixel ``p`` lying in ``N_p`` patches, its
    ``N_p`` copies get noise ``u_p ⊥ 1`` (``Σ`` of ``u`` over the copies of ``p`` is 0), written
    ``u_p = B_p w_p`` with ``B_p`` an orthonormal basis of the complement of the diagonal:

    * ``noise="normal"`` (default, appendix B): ``w_p ~ N(0, σ² I_{N_p−1})``, sampled as a Gaussian
      on the copies centred per pixel (``g − unfold(fold(g)/N)``), the same law as the
      pseudocode's uniform direction times a chi amplitude;
    * ``noise="uniform"``: ``w_p`` uniform on the ``(N_p−1)``-ball of radius ``σ`` (direction of
      the centred Gaussian times ``σ·U^{1/(N_p−1)}``).

    ``σ`` is one learned scale (absent when no pixel is shared). Pixels with ``N_p = 1`` get no
    noise.

    Contribution (paper eq. 18): ``V = ½ Σ_p log N_p − Σ_p log q(w_p)``, the sum over the
    ``C·H·W`` pixels; under :func:`survae_flowify.noise_off` only ``½ Σ_p log N_p``.
    Inverse: the mean over the copies, ``x = fold(v) / N``.

    When ``stride == kernel_size`` no pixel is shared: the layer is a permutation, exact, and
    deterministic (:attr:`exact`). Any tiled size works unless ``image_size=(H, W)`` fixes it; a
    fixed size whose patches do not overlap (a single patch along each axis with ``s < k``) is
    exact too.
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
        self.kernel_size, self.stride = check_kernel_stride("Unfold", kernel_size, stride)
        self.in_channels = check_channels("Unfold", in_channels)
        self.kind = check_noise("Unfold", noise)
        self.image_size = check_image_size("Unfold", image_size)
        if self.image_size is not None:
            self.output_size(self.image_size)  # raises unless the kernel tiles it
        init_scale = _checks.positive_float("Unfold", "init_scale", init_scale)
        # Without shared pixels there is no noise: no scale that would never get a gradient
        # (which would force DDP's find_unused_parameters).
        self.log_scale = None if self.exact else nn.Parameter(torch.tensor(math.log(init_scale)))

    def extra_repr(self) -> str:
        out = f"kernel_size={self.kernel_size}, stride={self.stride}, noise={self.kind!r}"
        if self.in_channels is not None:
            out += f", in_channels={self.in_channels}"
        return out if self.image_size is None else out + f", image_size={self.image_size}"

    @property
    def exact(self) -> bool:  # type: ignore[override]
        """True when no pixel lies in two patches: ``stride == kernel_size``, or an
        ``image_size`` with a single patch along every axis where ``stride < kernel_size``."""
        if self.stride == self.kernel_size:
            return True
        return self.image_size is not None and self.output_size(self.image_size) == (1, 1)

    @property
    def bounded_noise(self) -> bool:
        return self.kind == "uniform" and not self.exact

    @property
    def in_shape(self) -> Shape:
        return (self.in_channels, *(self.image_size or (None, None)))

    @property
    def out_shape(self) -> Shape:
        k2 = self.kernel_size**2
        hw = (None, None) if self.image_size is None else self.output_size(self.image_size)
        return (None if self.in_channels is None else self.in_channels * k2, *hw)

    def output_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(H', W')`` for an input of size ``(H, W)``; raises unless the kernel tiles it."""
        k, s = self.kernel_size, self.stride
        for size in image_size:
            if size < k or (size - k) % s:
                raise ValueError(
                    f"Unfold({self.extra_repr()}): the kernel does not tile an image of size "
                    f"{tuple(image_size)}: expected sizes >= {k} with (size - {k}) % {s} == 0 "
                    "(pad first, e.g. with survae_flowify.Pad)"
                )
        return tuple((size - k) // s + 1 for size in image_size)  # type: ignore[return-value]

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        self.output_size((h, w))  # raises unless the kernel tiles the input
        n = multiplicities((h, w), self.kernel_size, self.stride, like=x)
        contribution = (0.5 * c * n.log().sum()).expand(b)
        pixels = _batch_last(x)  # (C, H, W, B)
        v = _windows(pixels, self.kernel_size, self.stride)
        if not self.exact and _state.noise_enabled():
            u, log_q = self._sample_noise(pixels, n[:, :, None])
            v = v + u
            contribution = contribution - log_q
        return v.permute(3, 0, 1, 2), contribution

    def _sample_noise(self, pixels: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
        """Noise on the patches ``(C·k², H', W', B)``, orthogonal to the diagonal per pixel, and
        ``log q`` per image; ``pixels`` ``(C, H, W, B)`` gives the sizes, ``n`` is ``(H, W, 1)``."""
        k, s = self.kernel_size, self.stride
        c, h, w, b = pixels.shape
        out_h, out_w = self.output_size((h, w))
        g = torch.randn(c * k * k, out_h, out_w, b, dtype=pixels.dtype, device=pixels.device)
        g = g - _windows(_fold(g, (h, w), k, s) / n, k, s)  # centred: exactly 0 where N = 1
        log_scale = self.log_scale.to(pixels.dtype)
        scale = torch.exp(log_scale)
        m = c * (n - 1).sum()
        if self.kind == "normal":
            # The normal log q is a sum over pixels: one "pixel" holding the image's whole ‖u‖²
            # and all its m = Σ(N−1) degrees of freedom gives the same value, without a fold of g².
            u = g * scale
            sq_norm = u.square().sum((0, 1, 2))[:, None]
            return u, log_q_orthogonal(sq_norm, m.reshape(1), log_scale, "normal")
        # Uniform on the (N−1)-ball: unit direction times radius σ·U^{1/(N−1)}. Where N = 1, g is
        # exactly 0; the masks keep 0/0 out of the values and of the gradients.
        sq_norm = _fold(g.square(), (h, w), k, s)  # (C, H, W, B)
        shared = n > 1
        u01 = torch.rand(sq_norm.shape, dtype=pixels.dtype, device=pixels.device)
        amplitude = u01 ** (1 / (n - 1).clamp_min(1)) * torch.where(shared, sq_norm, 1).rsqrt()
        u = g * _windows(scale * amplitude, k, s)
        per_pixel = (n - 1).expand(c, h, w, 1).reshape(-1)
        return u, log_q_orthogonal(sq_norm.reshape(c * h * w, b).T, per_pixel, log_scale, "uniform")

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        _, ck2, out_h, out_w = z.shape
        k, s = self.kernel_size, self.stride
        if ck2 % (k * k):
            raise ValueError(
                f"Unfold({self.extra_repr()}): expected z with a multiple of {k * k} channels "
                f"(C·k²), got shape {tuple(z.shape)}"
            )
        size = ((out_h - 1) * s + k, (out_w - 1) * s + k)
        return fold(z, size, k, s) / multiplicities(size, k, s, like=z)
