"""What every flowified Linear shares, whatever its parametrization: sizes, options, bias, factory.

``Linear(in_features, out_features, *, parametrization=...)`` returns the class registered for its
parametrization (``"svd"``: :mod:`survae_flowify.layers.linear`, ``"gram"``:
:mod:`survae_flowify.layers.gram_linear`, ``"lu"``: :mod:`survae_flowify.layers.lu_linear`) and
regime (``in == out``, ``in > out``, ``in < out``), so ``isinstance`` tells both. The concrete
modules register their classes here, which keeps the imports one-way (this module imports none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar, get_args

import torch
from torch import Tensor, nn

from survae_flowify import _checks
from survae_flowify._cache import ParameterCache
from survae_flowify.algebra.transform import Shape, Transform, check_context
from survae_flowify.distributions.conditional import (
    InverseDensityKind,
    check_context_features,
    make_inverse_density,
)
from survae_flowify.distributions.noise import Noise, NoiseKind
from survae_flowify.layers.rotations import RotationKind

__all__ = [
    "INVERSE_DENSITIES",
    "NOISES",
    "PARAMETRIZATIONS",
    "ROTATIONS",
    "IncreasingParts",
    "Linear",
    "ReducingParts",
    "SquareParts",
    "register",
]

Parametrization = Literal["svd", "gram", "lu"]
Regime = Literal["square", "reducing", "increasing"]
PARAMETRIZATIONS: tuple[str, ...] = get_args(Parametrization)
INVERSE_DENSITIES: tuple[str, ...] = get_args(InverseDensityKind)
NOISES: tuple[str, ...] = get_args(NoiseKind)
ROTATIONS: tuple[str, ...] = get_args(RotationKind)
DEFAULT_HIDDEN = 64  # width of the conditional inverse density's network (as ConditionalNormalDensity)

_REGISTRY: dict[tuple[str, str], type[Linear]] = {}
L = TypeVar("L", bound="Linear")


def register(parametrization: Parametrization, regime: Regime) -> Callable[[type[L]], type[L]]:
    """Class decorator: ``Linear(...)`` builds this class for that parametrization and regime."""
    def decorate(cls: type[L]) -> type[L]:
        _REGISTRY[parametrization, regime] = cls
        return cls
    return decorate


def regime(in_features: int, out_features: int) -> Regime:
    if in_features == out_features:
        return "square"
    return "reducing" if in_features > out_features else "increasing"


def _sizes(args: tuple, kwargs: dict) -> tuple[int, int]:
    names = ("in_features", "out_features")
    given = dict(zip(names, args))
    for name in names:
        if name in kwargs:
            given[name] = kwargs[name]
        if name not in given:
            raise TypeError(f"Linear: missing argument {name}")
    return (_checks.positive_int("Linear", "in_features", given["in_features"]),
            _checks.positive_int("Linear", "out_features", given["out_features"]))


class Linear(ParameterCache, Transform):
    """Flowified ``nn.Linear(in_features, out_features)`` (paper §3.1, DESIGN.md §2).

    Args:
        in_features, out_features: sizes; input ``(B, in_features)``, output ``(B, out_features)``.
        bias: learn ``b`` (else ``b = 0``).
        inverse_density: for ``in > out``, the density of the dropped coordinates: ``"normal"``,
            ``"diagonal"`` (learned) or ``"conditional"`` (mean and scale predicted from ``z``
            by ``Linear(out, hidden) → GELU → Linear(hidden, 2(in − out))``).
        noise: for ``in < out``, the augmenting noise: ``"normal"`` or ``"uniform"``, learned scale.
        rotation: parametrisation of ``U`` and ``V``: ``"householder"`` (fast default),
            ``"cayley"`` or ``"exp"`` (the paper's Lie-algebra map, appendix G).
        parametrization: ``"svd"`` (default, :mod:`survae_flowify.layers.linear`) or ``"gram"``:
            no rotations, a dense ``W`` whose Gram matrix gives the same likelihood when the
            inverse density and the noise are standard normal
            (:mod:`survae_flowify.layers.gram_linear`); fastest for wide layers. With
            ``inverse_density="conditional"`` a reducing Gram layer gets the basis-free
            :class:`~survae_flowify.distributions.nullspace.NullSpaceNormal` (isotropic on the
            null space of ``W``, mean predicted in data space); ``"diagonal"`` and uniform
            noise need the SVD parametrization. ``"lu"``: ``W`` from ``T = L U`` (triangular) and
            two dense couplings, an exact contribution with every inverse density and noise of
            the SVD layer and no rotations (:mod:`survae_flowify.layers.lu_linear`).
        hidden: width of the conditional inverse density's network.
        context_features: for ``in > out`` with ``inverse_density="conditional"``, the size ``k``
            of a flow context ``a`` (``(B, k)``) that the density's network sees too:
            ``p(y_drop | z, a)`` from ``Linear(out + k, hidden)``. Every call then needs a context.
            A layer that drops nothing, or another inverse density, cannot use it: ``ValueError``.

    Every option is validated whatever the regime (a square layer has no inverse density, but
    ``inverse_density="bogus"`` is still an error). ``layer.weight`` (``(out, in)``) and
    ``layer.bias`` are the equivalent dense layer: under :func:`survae_flowify.noise_off` the
    forward output is ``F.linear(x, weight, bias)``.
    """

    parametrization: str

    def __new__(cls, *args: object, **kwargs: object) -> Linear:
        if cls is Linear:
            fin, fout = _sizes(args, kwargs)
            kind = _checks.choice("Linear", "parametrization", kwargs.get("parametrization", "svd"),
                                  PARAMETRIZATIONS)
            cls = _REGISTRY[kind, regime(fin, fout)]
        return super().__new__(cls)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        inverse_density: InverseDensityKind = "normal",
        noise: NoiseKind = "normal",
        rotation: RotationKind = "householder",
        parametrization: Parametrization = "svd",
        hidden: int = DEFAULT_HIDDEN,
        context_features: int | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = _sizes((in_features, out_features), {})
        _checks.boolean("Linear", "bias", bias)
        self.inverse_density_kind = _checks.choice("Linear", "inverse_density", inverse_density,
                                                   INVERSE_DENSITIES)
        self.noise_kind = _checks.choice("Linear", "noise", noise, NOISES)
        self.rotation_kind = _checks.choice("Linear", "rotation", rotation, ROTATIONS)
        if _checks.choice("Linear", "parametrization", parametrization, PARAMETRIZATIONS) \
                != self.parametrization:
            raise ValueError(f"{type(self).__name__}: parametrization must be "
                             f"{self.parametrization!r}, got {parametrization!r}")
        self.hidden = _checks.positive_int("Linear", "hidden", hidden)
        self.context_features = check_context_features("Linear", context_features, inverse_density)
        if self.context_features is not None and self.in_features <= self.out_features:
            raise ValueError(
                f"Linear({self.in_features}, {self.out_features}): context_features is used by the "
                "conditional inverse density of a reducing layer (in_features > out_features); "
                "this layer drops nothing"
            )
        self.rank = min(self.in_features, self.out_features)
        self._with_bias = bias

    def _register_bias(self) -> None:
        """Called by subclasses after their weights, so parameter order stays as it was (state
        dicts and seeded perturbations of older versions reproduce)."""
        self.bias_param = nn.Parameter(torch.zeros(self.out_features)) if self._with_bias else None

    @property
    def in_shape(self) -> Shape:
        return (self.in_features,)

    @property
    def out_shape(self) -> Shape:
        return (self.out_features,)

    @property
    def weight(self) -> Tensor:
        """The equivalent dense weight, shape ``(out, in)``."""
        raise NotImplementedError

    @property
    def bias(self) -> Tensor | None:
        return self.bias_param

    def _b(self, like: Tensor) -> Tensor | float:
        return 0.0 if self.bias_param is None else self.bias_param.to(like.dtype)

    def _fit(self, weight: Tensor) -> None:
        """Set the parameters so that :attr:`weight` equals ``weight`` (float64, CPU)."""
        raise NotImplementedError

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs: object) -> Linear:
        """A flowified layer with the weight and bias of a trained ``nn.Linear``, on its device
        and in its dtype. ``kwargs`` are :class:`Linear`'s options (``parametrization``, ...).

        The SVD parametrization fits ``U``, ``Σ``, ``V`` (singular vectors of determinant −1 are
        handled by the rotations' sign buffers); the LU parametrization takes ``T``, ``B`` from an
        LU with partial pivoting, which also sets its ``perm`` buffer (``C = 0``). A weight with a
        zero singular value has no flowified equivalent and raises ``ValueError``. A ``meta`` layer
        gives a ``meta`` layer of the same structure (there are no values to fit).
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Linear.from_linear: expected torch.nn.Linear, got {type(linear).__name__}")
        weight = linear.weight.detach()
        out_f, in_f = weight.shape
        layer = Linear(in_f, out_f, bias=linear.bias is not None, **kwargs)  # type: ignore[arg-type]
        if weight.device.type != "meta":
            layer.double()._fit(weight.to("cpu", torch.float64))
            if linear.bias is not None:
                with torch.no_grad():
                    layer.bias_param.copy_(linear.bias.detach().to(layer.bias_param))
        return layer.to(device=weight.device, dtype=weight.dtype)


# ----------------------------------------------------------------------------- regimes by parts
# The three regimes' transform methods, written once for every parametrization that offers the
# low-level parts ``forward_parts(x) -> (z, dropped, log_q, log_det)`` and
# ``inverse_parts(z, dropped) -> x`` (SVD and LU). Put the mixin first in the bases, so that its
# ``_init_regime`` and methods take precedence over the parametrization's defaults.
class SquareParts:
    """``in == out``: ``V = log_det``; the inverse is ``inverse_parts(z, None)``."""

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, _, _, log_det = self.forward_parts(x)  # type: ignore[attr-defined]
        return z, log_det.expand(x.shape[0])

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return self.inverse_parts(z, None)  # type: ignore[attr-defined]


class ReducingParts:
    """``in > out``: ``V = log_det + log p(dropped | z[, context])``, exact; the inverse draws the
    dropped coordinates from that density (or takes its mean)."""

    def _init_regime(self) -> None:
        drop = self.in_features - self.out_features  # type: ignore[attr-defined]
        self.inverse_density = make_inverse_density(
            self.inverse_density_kind, (drop,), (self.out_features,), hidden=self.hidden,  # type: ignore[attr-defined]
            context_features=self.context_features, owner="Linear")  # type: ignore[attr-defined]

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_context(self, context, self.context_features, x.shape[0])  # type: ignore[arg-type, attr-defined]
        z, dropped, _, log_det = self.forward_parts(x)  # type: ignore[attr-defined]
        return z, log_det + self.inverse_density.log_prob(dropped, z, context)

    def _inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool) -> Tensor:
        check_context(self, context, self.context_features, z.shape[0])  # type: ignore[arg-type, attr-defined]
        return self.inverse_parts(z, self.inverse_density.draw(z, context, mean=mean))  # type: ignore[attr-defined]


class IncreasingParts:
    """``in < out``: ``V = log_det − log q(u)`` for the noise ``u`` the forward drew (a bound);
    the inverse drops the noise."""

    def _init_regime(self) -> None:
        self.noise = Noise(self.noise_kind)  # type: ignore[attr-defined]

    @property
    def bounded_noise(self) -> bool:
        return self.noise.bounded

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, _, log_q, log_det = self.forward_parts(x)  # type: ignore[attr-defined]
        return z, log_det - log_q

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return self.inverse_parts(z, None)  # type: ignore[attr-defined]
