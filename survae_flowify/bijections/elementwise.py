r"""``ElementwiseAffine``: ``z = a·x + b`` per channel, the flowified form of a batch norm in eval mode."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify import _checks
from survae_flowify.algebra.transform import Bijection, Shape

__all__ = ["ElementwiseAffine"]


class ElementwiseAffine(Bijection):
    r"""A per-channel affine bijection ``z_{c,p} = a_c x_{c,p} + b_c`` with ``a_c ≠ 0``.

    For an input of event shape ``shape = (C, *rest)`` (vectors ``(C,)``; sequences ``(C, L)``;
    images ``(C, H, W)``: one ``(a_c, b_c)`` per channel, shared over the positions ``p``):

    .. math:: z_{c,p} = a_c\, x_{c,p} + b_c, \qquad x_{c,p} = (z_{c,p} - b_c) / a_c, \qquad
              V = P \sum_c \log |a_c| ,

    ``P = prod(rest)`` (1 for vectors, ``H·W`` for images). ``a = sign · exp(log_scale)`` with
    a fixed sign per channel (a buffer) and a learned ``log_scale``, so training never drives a
    scale through zero; ``b`` is ``shift``. Sizes after the channel may be ``None`` (any).

    :meth:`from_batch_norm` builds it from a trained ``nn.BatchNorm1d/2d`` in eval mode:
    ``a = γ / √(running_var + ε)``, ``b = β − running_mean · a`` (``γ = 1, β = 0`` without affine
    weights); both stay trainable.
    """

    def __init__(self, shape: int | tuple[int | None, ...], *, scale: Tensor | None = None,
                 shift: Tensor | None = None) -> None:
        super().__init__()
        self.shape = _checks.shape("ElementwiseAffine", "shape", shape, allow_none=True)
        channels = self.shape[0]
        if channels is None:
            raise ValueError(f"ElementwiseAffine: the channel size of shape must be given, got {self.shape}")
        scale = torch.ones(channels) if scale is None else self._vector("scale", scale, channels)
        shift = torch.zeros(channels) if shift is None else self._vector("shift", shift, channels)
        if not bool((scale != 0).all()):
            raise ValueError(f"ElementwiseAffine: every scale must be non-zero (a zero scale is not "
                             f"invertible), got {scale.tolist()}")
        self.log_scale = nn.Parameter(scale.abs().log())
        self.shift = nn.Parameter(shift.clone())
        self.register_buffer("sign", scale.sign())

    @staticmethod
    def _vector(name: str, value: object, channels: int) -> Tensor:
        if not isinstance(value, Tensor) or value.shape != (channels,) or not value.is_floating_point():
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"ElementwiseAffine: {name} must be a floating tensor of shape ({channels},), "
                             f"got {got}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"ElementwiseAffine: {name} must be finite, got {value.tolist()}")
        return value.detach().clone()

    @classmethod
    def from_batch_norm(cls, norm: nn.modules.batchnorm._BatchNorm,
                        shape: tuple[int | None, ...] | None = None) -> ElementwiseAffine:
        """The affine map that ``norm`` (``nn.BatchNorm1d/2d``) computes in eval mode.

        ``shape`` is the event shape ``(C, …)`` (default: ``(C,)`` for ``BatchNorm1d``,
        ``(C, None, None)`` for ``BatchNorm2d``). A norm without running statistics normalises
        with the batch's own, which is no fixed map: refused.
        """
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm):
            raise TypeError(f"ElementwiseAffine.from_batch_norm: expected an nn.BatchNorm1d/2d, got "
                            f"{type(norm).__name__}")
        if norm.running_mean is None or norm.running_var is None:
            raise ValueError(f"ElementwiseAffine.from_batch_norm: {norm} has track_running_stats=False: it "
                             "normalises with each batch's own statistics, not a fixed invertible map")
        c = norm.num_features
        if shape is None:
            shape = (c,) if isinstance(norm, nn.BatchNorm1d) else (c, None, None)
        with torch.no_grad():
            a = torch.rsqrt(norm.running_var.double() + norm.eps)
            if norm.weight is not None:
                a = a * norm.weight.double()
            b = -norm.running_mean.double() * a
            if norm.bias is not None:
                b = b + norm.bias.double()
        dtype = norm.running_mean.dtype
        layer = cls(shape, scale=a.to(dtype), shift=b.to(dtype))
        return layer.to(norm.running_mean.device)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    @property
    def in_shape(self) -> Shape:
        return self.shape

    @property
    def out_shape(self) -> Shape:
        return self.shape

    @property
    def scale(self) -> Tensor:
        """``a = sign · exp(log_scale)``, shape ``(C,)``."""
        return self.sign * torch.exp(self.log_scale)

    def _broadcast(self, v: Tensor, x: Tensor) -> Tensor:
        return v.reshape(-1, *([1] * (x.dim() - 2)))

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = x * self._broadcast(self.scale, x) + self._broadcast(self.shift, x)
        positions = math.prod(x.shape[2:])
        return z, (positions * self.log_scale.sum()).expand(x.shape[0])

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        inv = self.sign * torch.exp(-self.log_scale)
        return (z - self._broadcast(self.shift, z)) * self._broadcast(inv, z)
