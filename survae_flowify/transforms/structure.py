"""Shape-only bijections: :class:`Flatten` and :class:`Reshape` (contribution 0)."""

from __future__ import annotations

import math

from torch import Tensor

from survae_flowify import _checks
from survae_flowify.algebra.transform import Bijection, Shape

__all__ = ["Flatten", "Reshape"]


class Reshape(Bijection):
    """``(B, *in_shape) → (B, *out_shape)`` with ``prod(in_shape) == prod(out_shape)``; ``V = 0``."""

    def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self._in = _checks.shape("Reshape", "in_shape", in_shape)
        self._out = _checks.shape("Reshape", "out_shape", out_shape)
        if math.prod(self._in) != math.prod(self._out):
            raise ValueError(
                f"Reshape: {self._in} and {self._out} hold different numbers of elements"
            )

    def extra_repr(self) -> str:
        return f"in_shape={self._in}, out_shape={self._out}"

    @property
    def in_shape(self) -> Shape:
        return self._in

    @property
    def out_shape(self) -> Shape:
        return self._out

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.reshape(x.shape[0], *self._out), x.new_zeros(x.shape[0])

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return z.reshape(z.shape[0], *self._in)


class Flatten(Bijection):
    """``(B, *shape) → (B, prod(shape))``; ``V = 0``.

    ``shape`` (the unflattened event shape) is needed to invert; without it the forward
    accepts any shape and the inverse raises an error asking for it.
    """

    def __init__(self, shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.shape = None if shape is None else _checks.shape("Flatten", "shape", shape)

    def extra_repr(self) -> str:
        return "" if self.shape is None else f"shape={self.shape}"

    @property
    def in_shape(self) -> Shape | None:
        return self.shape

    @property
    def out_shape(self) -> Shape | None:
        return None if self.shape is None else (math.prod(self.shape),)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.reshape(x.shape[0], math.prod(x.shape[1:])), x.new_zeros(x.shape[0])

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        if self.shape is None:
            raise ValueError(
                "Flatten: cannot invert without the unflattened shape; construct it as "
                "Flatten(shape=(C, H, W)) (flowify(..., input_shape=...) fills it in)"
            )
        return z.reshape(z.shape[0], *self.shape)
