r"""Fixed permutations of dimension 1: :class:`Reverse` and :class:`Permute` (contribution 0)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from survae_flowify import _state
from survae_flowify.algebra.transform import Bijection, _describe

__all__ = ["Permute", "Reverse"]


def _check_dim1(layer: Bijection, t: Tensor, what: str, size: int | None) -> None:
    """``t`` has a dimension 1 (of ``size`` entries, when given)."""
    if not _state.validation_enabled():
        return
    if t.dim() < 2 or (size is not None and t.shape[1] != size):
        expected = "(batch, D, ...)" if size is None else f"(batch, {size}, ...)"
        raise ValueError(f"{_describe(layer)}: expected {what} of shape {expected}, got {tuple(t.shape)}")


class Reverse(Bijection):
    r"""``z_i = x_{D-1-i}`` along dimension 1 (channels of an image, features of a vector).

    Its own inverse; ``V = 0``. Any event shape of at least one dimension.
    """

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_dim1(self, x, "x", None)
        return x.flip(1), x.new_zeros(x.shape[0])

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        _check_dim1(self, z, "z", None)
        return z.flip(1)


class Permute(Bijection):
    r"""A fixed permutation ``π`` of dimension 1: ``z_i = x_{π(i)}``, ``x_j = z_{π^{-1}(j)}``.

    ``permutation`` is a sequence (or 1-D integer tensor) holding each of ``0, …, D−1`` once;
    the inverse uses ``π^{-1} = argsort(π)``. ``V = 0``. Inputs ``(B, D, ...)``.
    """

    def __init__(self, permutation: Sequence[int] | Tensor) -> None:
        super().__init__()
        perm = _permutation(permutation)
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))

    def extra_repr(self) -> str:
        return f"features={self.permutation.numel()}"

    def _check(self, t: Tensor, what: str) -> None:
        _check_dim1(self, t, what, self.permutation.numel())
        if _state.validation_enabled() and t.device != self.permutation.device:
            raise ValueError(
                f"{_describe(self)}: {what} is on device {t.device} but the permutation is on "
                f"{self.permutation.device}; move one of them (.to(device))"
            )

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x, "x")
        return x.index_select(1, self.permutation), x.new_zeros(x.shape[0])

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        self._check(z, "z")
        return z.index_select(1, self.inverse_permutation)


def _permutation(value: object) -> Tensor:
    """``value`` as a ``long`` tensor if it is a permutation of ``range(D)``, ``D ≥ 1``."""
    expected = "a permutation of range(D) (each of 0, …, D−1 once), D >= 1"
    if isinstance(value, Tensor):
        if value.dim() != 1 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"Permute: permutation must be {expected}, got a tensor of shape "
                             f"{tuple(value.shape)} and dtype {value.dtype}")
        items = value.tolist()
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        items = list(value)
    else:
        raise TypeError(f"Permute: permutation must be {expected}, got {type(value).__name__}")
    if any(not isinstance(i, numbers.Integral) or isinstance(i, bool) for i in items):
        raise TypeError(f"Permute: permutation must be {expected}, got {value!r}")
    items = [int(i) for i in items]
    if not items or sorted(items) != list(range(len(items))):
        raise ValueError(f"Permute: permutation must be {expected}, got {value!r}")
    return torch.tensor(items, dtype=torch.long)
