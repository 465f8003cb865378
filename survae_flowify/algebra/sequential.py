"""Composition of transforms; a composite is itself a :class:`Transform`."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping

from torch import Tensor

from survae_flowify import _checks, _state
from survae_flowify.algebra.transform import Shape, Transform, check_input

__all__ = ["Sequential", "entry_layer", "exit_layer"]


class Sequential(Transform):
    r"""``T_n ∘ … ∘ T_1``: contributions add, inverses run in reverse order.

    .. math:: V(x) = \sum_i V_i(x_{i-1}, x_i), \qquad x_0 = x,\ x_n = z.

    Parts are numbered (``Sequential(a, b)``) or named, like ``torch.nn.Sequential``:
    ``Sequential(OrderedDict(encoder=a, head=b))`` or ``Sequential(encoder=a, head=b)``; the
    names appear in :meth:`Flow.breakdown` and in ``state_dict`` keys, and ``seq["head"]``
    returns a part by name.

    Kind flags are derived from the parts: the composite is exact only when every part is,
    and its forward (inverse) is stochastic when any part's is.
    """

    def __init__(self, *transforms: Transform | Mapping[str, Transform], **named: Transform) -> None:
        super().__init__()
        for name, t in _named_parts(transforms, named):
            if not isinstance(t, Transform):
                raise TypeError(
                    f"Sequential: part {name!r} is {type(t).__name__}, expected a survae_flowify "
                    "Transform (use survae_flowify.flowify() to convert torch.nn layers)"
                )
            if not name or "." in name or name in self._modules:
                raise ValueError(
                    f"Sequential: part names must be distinct, non-empty and without '.', got {name!r}"
                )
            self.add_module(name, t)

    def __len__(self) -> int:
        return len(self._modules)

    def __getitem__(self, i: int | str) -> Transform:
        if isinstance(i, str):
            if i not in self._modules:
                raise KeyError(f"Sequential: no part named {i!r}; parts: {', '.join(self._modules)}")
            return self._modules[i]  # type: ignore[return-value]
        return list(self._modules.values())[i]  # type: ignore[return-value]

    def __iter__(self) -> Iterator[Transform]:
        return iter(self._modules.values())  # type: ignore[arg-type]

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

    # The entry of a call checks the input once, naming the leaf layer that takes it and
    # comparing dtype/device with the whole composite's parameters; the parts then skip the
    # non-finite check (a device sync per layer) and the dtype/device look-up.
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if _state.validation_enabled():
            entry = entry_layer(self)
            check_input(entry, x, entry.in_shape, what="x", integer_ok=entry.accepts_integer,
                        reference=self)
        if len(self) == 0:
            return x, x.new_zeros(x.shape[0])
        parts = list(self)
        with _state.inside_call():
            x, total = parts[0].forward(x, context)
            for t in parts[1:]:
                x, c = t.forward(x, context)
                total = total + c
        return x, total

    def inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool = False) -> Tensor:
        if _state.validation_enabled():
            last = exit_layer(self)
            check_input(last, z, last.out_shape, what="z", reference=self)
            if not isinstance(mean, bool):
                _checks.boolean("Sequential.inverse", "mean", mean)
        with _state.inside_call():
            for t in reversed(list(self)):
                z = t.inverse(z, context, mean=mean)
        return z

    def trace(self, x: Tensor, context: Tensor | None = None) -> list[tuple[str, Transform, Tensor, Tensor]]:
        rows: list[tuple[str, Transform, Tensor, Tensor]] = []
        for name, t in self._modules.items():
            for sub, layer, z, c in t.trace(x, context):  # type: ignore[union-attr, operator]
                rows.append((f"{name}.{sub}" if sub else name, layer, z, c))
            x = rows[-1][2]
        return rows


def _named_parts(
    transforms: tuple[Transform | Mapping[str, Transform], ...], named: Mapping[str, Transform]
) -> list[tuple[str, Transform]]:
    """``(name, part)`` pairs from positional parts, one mapping, or keyword parts."""
    if len(transforms) == 1 and isinstance(transforms[0], Mapping):
        if named:
            raise TypeError("Sequential: give the parts as one mapping or as keywords, not both")
        return [(str(k), v) for k, v in transforms[0].items()]
    if named and transforms:
        raise TypeError("Sequential: give numbered (positional) or named (keyword) parts, not both")
    if named:
        return list(OrderedDict(named).items())
    return [(str(i), t) for i, t in enumerate(transforms)]  # type: ignore[misc]


def entry_layer(transform: Transform) -> Transform:
    """The first leaf layer (the one that takes a call's input), so errors name it."""
    while isinstance(transform, Sequential) and len(transform):
        transform = transform[0]
    return transform


def exit_layer(transform: Transform) -> Transform:
    """The last leaf layer (the one that takes an inverse call's input)."""
    while isinstance(transform, Sequential) and len(transform):
        transform = transform[-1]
    return transform
