r"""``Parallel(a, b)``: two transforms side by side on the two parts of the channel dimension.

With :class:`~survae_flowify.transforms.Repeat` in front it flowifies a network's two branches
from one value: ``torch.cat([a(h), b(h)], dim=1)`` is ``Repeat(2) → Parallel(a, b)`` and
``a(h) + b(h)`` adds :class:`~survae_flowify.layers.residual.AddHalves` (the residual connection
``h + f(h)`` is the case ``a = id``, :class:`~survae_flowify.layers.residual.Residual`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from survae_flowify import _checks
from survae_flowify.algebra.sequential import Sequential
from survae_flowify.algebra.transform import Shape, Transform

__all__ = ["Parallel"]


class Parallel(Transform):
    r"""``(x_a, x_b) ↦ (a(x_a), b(x_b))`` on dimension 1; contribution ``V_a(x_a) + V_b(x_b)``.

    ``x`` of shape ``(B, C_a + C_b, …)`` is split along dimension 1 into ``x_a`` of event shape
    ``in_shapes[0]`` and ``x_b`` of ``in_shapes[1]``; the output concatenates ``a(x_a)`` and
    ``b(x_b)`` of event shapes ``out_shapes`` along dimension 1 (all dimensions but the first must
    agree). Inverse: split ``z`` by ``out_shapes`` and invert each part. The kind follows the
    parts: exact when both are, stochastic in a direction when either is. ``None`` for a part is
    the identity (an empty :class:`~survae_flowify.algebra.sequential.Sequential`). A context
    reaches both parts.
    """

    def __init__(self, a: Transform | None, b: Transform | None, *, in_shapes: tuple[tuple[int, ...], ...],
                 out_shapes: tuple[tuple[int, ...], ...]) -> None:
        super().__init__()
        parts = [Sequential() if p is None else p for p in (a, b)]
        for name, p in zip("ab", parts):
            if not isinstance(p, Transform):
                raise TypeError(f"Parallel: {name} must be a survae_flowify Transform, got "
                                f"{type(p).__name__}")
        self.a, self.b = parts
        if len(in_shapes) != 2 or len(out_shapes) != 2:
            raise ValueError(f"Parallel: in_shapes and out_shapes need two shapes each, got {in_shapes}, "
                             f"{out_shapes}")
        self._in = tuple(_checks.shape("Parallel", "in_shapes", s) for s in in_shapes)
        self._out = tuple(_checks.shape("Parallel", "out_shapes", s) for s in out_shapes)
        for name, (s, t) in (("in_shapes", self._in), ("out_shapes", self._out)):
            if len(s) != len(t) or s[1:] != t[1:]:
                raise ValueError(f"Parallel: the two {name} must agree after the channel dimension, got "
                                 f"{s}, {t}")

    def extra_repr(self) -> str:
        return f"in_shapes={self._in}, out_shapes={self._out}"

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return self.a.exact and self.b.exact

    @property
    def stochastic_forward(self) -> bool:  # type: ignore[override]
        return self.a.stochastic_forward or self.b.stochastic_forward

    @property
    def stochastic_inverse(self) -> bool:  # type: ignore[override]
        return self.a.stochastic_inverse or self.b.stochastic_inverse

    @property
    def bounded_noise(self) -> bool:
        return self.a.bounded_noise or self.b.bounded_noise

    @staticmethod
    def _joined(shapes: tuple[tuple[int, ...], ...]) -> Shape:
        return (shapes[0][0] + shapes[1][0], *shapes[0][1:])

    @property
    def in_shape(self) -> Shape:
        return self._joined(self._in)

    @property
    def out_shape(self) -> Shape:
        return self._joined(self._out)

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        xa, xb = x.split([self._in[0][0], self._in[1][0]], dim=1)
        za, va = self.a(xa, context)
        zb, vb = self.b(xb, context)
        return torch.cat([za, zb], dim=1), va + vb

    def _inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool) -> Tensor:
        za, zb = z.split([self._out[0][0], self._out[1][0]], dim=1)
        xa, xb = self.a.inverse(za, context, mean=mean), self.b.inverse(zb, context, mean=mean)
        return torch.cat([xa, xb], dim=1)
