"""Composition of transforms; a composite is itself a :class:`Transform`."""

from __future__ import annotations

from torch import Tensor

from survae_flowify.algebra.transform import Shape, Transform, _NoFiniteCheck

__all__ = ["Sequential"]


class Sequential(Transform):
    r"""``T_n ∘ … ∘ T_1``: contributions add, inverses run in reverse order.

    .. math:: V(x) = \sum_i V_i(x_{i-1}, x_i), \qquad x_0 = x,\ x_n = z.

    Kind flags are derived from the parts: the composite is exact only when every part is,
    and its forward (inverse) is stochastic when any part's is.
    """

    def __init__(self, *transforms: Transform) -> None:
        super().__init__()
        for i, t in enumerate(transforms):
            if not isinstance(t, Transform):
                raise TypeError(
                    f"Sequential: part {i} is {type(t).__name__}, expected a survae_flowify "
                    "Transform (use survae_flowify.flowify() to convert torch.nn layers)"
                )
            self.add_module(str(i), t)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, i: int) -> Transform:
        return list(self._modules.values())[i]  # type: ignore[return-value]

    def __iter__(self):
        return iter(self._modules.values())

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return all(t.exact for t in self)

    @property
    def stochastic_forward(self) -> bool:  # type: ignore[override]
        return any(t.stochastic_forward for t in self)

    @property
    def stochastic_inverse(self) -> bool:  # type: ignore[override]
        return any(t.stochastic_inverse for t in self)

    @property
    def accepts_integer(self) -> bool:  # type: ignore[override]
        return len(self) > 0 and self[0].accepts_integer

    @property
    def bounded_noise(self) -> bool:
        return any(t.bounded_noise for t in self)

    @property
    def in_shape(self) -> Shape | None:
        return self[0].in_shape if len(self) else None

    @property
    def out_shape(self) -> Shape | None:
        return self[-1].out_shape if len(self) else None

    # The first part checks the input (so errors name the layer that rejects it); the rest
    # skip the non-finite check, which would cost a device sync per layer.
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if len(self) == 0:
            return x, x.new_zeros(x.shape[0])
        parts = list(self)
        x, total = parts[0].forward(x)
        with _NoFiniteCheck():
            for t in parts[1:]:
                x, c = t.forward(x)
                total = total + c
        return x, total

    def inverse(self, z: Tensor, *, mean: bool = False) -> Tensor:
        parts = list(self)[::-1]
        if not parts:
            return z
        z = parts[0].inverse(z, mean=mean)
        with _NoFiniteCheck():
            for t in parts[1:]:
                z = t.inverse(z, mean=mean)
        return z

    def trace(self, x: Tensor) -> list[tuple[str, Transform, Tensor, Tensor]]:
        rows = []
        for name, t in self._modules.items():
            for sub, layer, z, c in t.trace(x):  # type: ignore[union-attr]
                rows.append((f"{name}.{sub}" if sub else name, layer, z, c))
            x = rows[-1][2]
        return rows
