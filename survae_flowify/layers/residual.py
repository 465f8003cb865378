r"""Flowified residual connections ``x ↦ x + f(x)`` (DESIGN.md §2 "Structure", paper §3).

A residual connection is three flowified steps, each a public transform:

1. :class:`~survae_flowify.transforms.Repeat` to two copies, ``x ↦ (x + w/√2, x − w/√2)``
   with noise ``w`` orthogonal to the diagonal (a generative surjection, contribution
   ``½ D log 2 − log q(w)``);
2. :class:`Branch`: ``(a, c) ↦ (a, f(c))``, contribution that of ``f``;
3. :class:`AddHalves`: the summing map ``(a, b) ↦ a + b`` as a dimension-reducing linear piece
   (an exact inference surjection).

Under :func:`survae_flowify.noise_off` the composite computes ``x + f(x)`` exactly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from survae_flowify import _checks
from survae_flowify.algebra.sequential import Sequential
from survae_flowify.algebra.transform import InferenceSurjection, Shape, Transform
from survae_flowify.distributions.conditional import (
    INVERSE_DENSITY_KINDS,
    InverseDensityKind,
    make_inverse_density,
)
from survae_flowify.distributions.noise import NOISE_KINDS, NoiseKind
from survae_flowify.transforms.repeat import Repeat

__all__ = ["AddHalves", "Branch", "Residual"]

_HALF_LOG_2 = 0.5 * math.log(2.0)


def _pair_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (2 * shape[0], *shape[1:])


class AddHalves(InferenceSurjection):
    r"""The summing map ``(a, b) ↦ z = a + b`` of two halves along dimension 1.

    In the orthonormal coordinates ``s = (a + b)/√2``, ``d = (a − b)/√2`` (a rotation,
    ``|det| = 1``) the map keeps ``s``, scales it, ``z = √2 s``, and drops ``d``. Hence, with
    ``D`` the number of entries of ``z``:

    .. math:: \log p(a, b) = \log p(z) + \tfrac{D}{2}\log 2 + \log p(d \mid z),

    so the contribution is ``V = ½ D log 2 + log p(d | z)``, exact. Inverse:
    ``d ~ p(· | z)`` (or its mean), ``a = z/2 + d/√2``, ``b = z/2 − d/√2``; then
    ``a + b = z`` (right inverse). ``inverse_density``: ``"normal"``, ``"diagonal"`` or
    ``"conditional"`` (mean and scale of ``d`` predicted from ``z``).
    Shapes: ``(B, 2C, …) → (B, C, …)`` for an event shape ``(C, …)`` of ``z``.
    """

    def __init__(
        self,
        shape: int | tuple[int, ...],
        *,
        inverse_density: InverseDensityKind = "normal",
        hidden: int = 64,
    ) -> None:
        super().__init__()
        self._out = _checks.shape("AddHalves", "shape", shape)
        self.inverse_density = make_inverse_density(inverse_density, self._out, self._out, hidden=hidden,
                                                    owner="AddHalves")

    def extra_repr(self) -> str:
        return f"shape={self._out}"

    @property
    def in_shape(self) -> Shape:
        return _pair_shape(self._out)

    @property
    def out_shape(self) -> Shape:
        return self._out

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x.chunk(2, dim=1)
        z = a + b
        d = (a - b) * math.sqrt(0.5)
        log_det = x.new_full((x.shape[0],), _HALF_LOG_2 * math.prod(z.shape[1:]))
        return z, log_det + self.inverse_density.log_prob(d, z)

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        d = self.inverse_density.draw(z, mean=mean)
        half, spread = 0.5 * z, d * math.sqrt(0.5)
        return torch.cat([half + spread, half - spread], dim=1)


class Branch(Transform):
    r"""``(a, c) ↦ (a, f(c))`` on the two halves along dimension 1; contribution that of ``f``.

    Its kind is ``f``'s: exact, stochastic forward or inverse exactly when ``f`` is. Inverse:
    ``(a, e) ↦ (a, f^{-1}(e))``. ``f`` must keep the shape of its input (``shape``).
    """

    def __init__(self, f: Transform, shape: tuple[int, ...]) -> None:
        super().__init__()
        if not isinstance(f, Transform):
            raise TypeError(f"Branch: f must be a survae_flowify Transform, got {type(f).__name__}")
        self.f = f
        self._half = _checks.shape("Branch", "shape", shape)

    def extra_repr(self) -> str:
        return f"shape={self._half}"

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return self.f.exact

    @property
    def stochastic_forward(self) -> bool:  # type: ignore[override]
        return self.f.stochastic_forward

    @property
    def stochastic_inverse(self) -> bool:  # type: ignore[override]
        return self.f.stochastic_inverse

    @property
    def bounded_noise(self) -> bool:
        return self.f.bounded_noise

    @property
    def in_shape(self) -> Shape:
        return _pair_shape(self._half)

    @property
    def out_shape(self) -> Shape:
        return _pair_shape(self._half)

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        a, c = x.chunk(2, dim=1)
        fc, contribution = self.f(c, context)
        return torch.cat([a, fc], dim=1), contribution

    def _inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool) -> Tensor:
        a, e = z.chunk(2, dim=1)
        return torch.cat([a, self.f.inverse(e, context, mean=mean)], dim=1)


class Residual(Sequential):
    r"""Flowified residual connection ``x ↦ x + f(x)``: ``Repeat(2) → Branch(f) → AddHalves``.

    ``f`` is a flowified transform with ``in_shape == out_shape`` (given by ``f`` or by
    ``shape``; vectors ``(D,)`` or maps ``(C, H, W)``). Forward, with ``D`` entries in ``x``:

    .. math:: (a, c) = (x + w/\sqrt2,\; x − w/\sqrt2),\quad z = a + f(c),\quad
              d = (a − f(c))/\sqrt2,

    .. math:: V = \underbrace{\tfrac{D}{2}\log 2 − \log q(w)}_{\text{Repeat}} + V_f(c)
              + \underbrace{\tfrac{D}{2}\log 2 + \log p(d \mid z)}_{\text{AddHalves}},

    a lower bound (the repetition is a generative surjection); ``w`` is normal (default) or
    uniform on the ball with a learned scale (``noise``), ``p(d | z)`` the inverse density
    (``inverse_density``). Under :func:`survae_flowify.noise_off`, ``z = x + f(x)``. Inverse:
    sample ``d`` (or its mean), ``a = z/2 + d/√2``, ``c = f^{-1}(z/2 − d/√2)``,
    ``x = (a + c)/2``.
    """

    def __init__(
        self,
        f: Transform,
        *,
        shape: int | tuple[int, ...] | None = None,
        noise: NoiseKind = "normal",
        inverse_density: InverseDensityKind = "normal",
        hidden: int = 64,
    ) -> None:
        super(Sequential, self).__init__()  # named parts instead of Sequential's numbered ones
        if not isinstance(f, Transform):
            raise TypeError(f"Residual: f must be a survae_flowify Transform, got {type(f).__name__}")
        _checks.choice("Residual", "noise", noise, NOISE_KINDS)
        _checks.choice("Residual", "inverse_density", inverse_density, INVERSE_DENSITY_KINDS)
        _checks.positive_int("Residual", "hidden", hidden)
        shape = _residual_shape(f, shape)
        self.add_module("repeat", Repeat(shape, 2, noise=noise))
        self.add_module("branch", Branch(f, shape))
        self.add_module("add", AddHalves(shape, inverse_density=inverse_density, hidden=hidden))

    @property
    def f(self) -> Transform:
        """The residual branch."""
        return self.branch.f


def _residual_shape(f: Transform, shape: int | tuple[int, ...] | None) -> tuple[int, ...]:
    known = [s for s in (f.in_shape, f.out_shape) if s is not None]
    if shape is not None:
        shape = _checks.shape("Residual", "shape", shape)
        known.append(shape)
    if not known:
        raise ValueError(f"Residual: the shape of {type(f).__name__} is not fixed; pass shape=(D,) "
                         "or shape=(C, H, W)")
    if any(None in s for s in known) and shape is None:
        raise ValueError(f"Residual: {type(f).__name__} has open sizes {known}; pass shape=...")
    target = shape if shape is not None else known[0]
    for s in known:
        if len(s) != len(target) or any(a is not None and a != b for a, b in zip(s, target)):
            raise ValueError(
                f"Residual: f must keep the shape of its input; got in_shape={f.in_shape}, "
                f"out_shape={f.out_shape}" + ("" if shape is None else f", shape={shape}")
            )
    return tuple(target)  # type: ignore[arg-type]
