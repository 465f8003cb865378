"""Inverse densities ``p(d | c)`` for what an inference surjection drops.

Each takes the dropped part ``d`` (shape ``(B, *drop_shape)``) and what was kept, ``c`` (shape
``(B, *context_shape)``), and offers ``log_prob(d, c) -> (B,)``, ``sample(c)``, ``mean(c)`` and
``draw(c, mean=...)``; each also takes an optional flow context ``context=`` (``(B, k)``), which
only a conditional density built with ``context_features=k`` uses. Three kinds, chosen by
:func:`make_inverse_density`:

* ``"normal"``: ``N(0, I)``, independent of ``c``;
* ``"diagonal"``: ``N(μ, diag σ²)`` with learned ``μ``, ``log σ``, independent of ``c``;
* ``"conditional"``: ``N(μ(c), diag σ(c)²)`` where a small network predicts ``μ`` and ``log σ``
  from ``c`` (an MLP for vectors, a convolutional network for ``(C, H, W)`` maps), as in the
  official flowification code (:class:`ConditionalNormalDensity`). With ``context_features=k``
  the network sees ``[c, context]``: concatenated for vectors, and for maps the context vector
  broadcast over every position as ``k`` extra input channels.

Shapes may leave spatial sizes open: ``drop_shape = (M, None, None)`` with
``context_shape = (C, None, None)`` describes densities over maps of any ``H × W`` (a
convolution kernel's dropped coordinates). The open sizes are read from the context at sampling
time; ``"diagonal"`` then learns one ``(μ, log σ)`` per channel, shared over positions, and
``"conditional"`` is fully convolutional.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from survae_flowify import _checks
from survae_flowify._layout import to_map, to_rows

__all__ = [
    "INVERSE_DENSITY_KINDS",
    "MAP_NETS",
    "ConditionalNormalDensity",
    "DiagonalNormalDensity",
    "InverseDensity",
    "StandardNormalDensity",
    "check_context_features",
    "make_inverse_density",
]

InverseDensityKind = Literal["normal", "diagonal", "conditional"]
INVERSE_DENSITY_KINDS: tuple[InverseDensityKind, ...] = ("normal", "diagonal", "conditional")
MapNetKind = Literal["3x3-3x3", "3x3-1x1", "1x1-1x1"]
MAP_NETS: tuple[MapNetKind, ...] = ("3x3-3x3", "3x3-1x1", "1x1-1x1")
"""The kernel sizes of the two convolutions of a conditional density over maps."""
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_SCALE_BOUND = 5.0


def _normal_log_prob(d: Tensor, loc: Tensor, log_scale: Tensor) -> Tensor:
    """``Σ log N(d; μ, σ²)`` per sample, as ``−½ Σ u² − Σ log σ − n·½ log 2π`` with
    ``u = (d − μ)/σ``: two reductions, no pass to add the terms elementwise. The sums run over
    the event dimensions in place (``flatten`` would copy a map laid out position-major)."""
    u = (d - loc) * torch.exp(-log_scale)
    dims = tuple(range(1, d.dim()))
    n = math.prod(d.shape[1:])
    return -0.5 * u.square().sum(dims) - log_scale.expand_as(u).sum(dims) - n * _HALF_LOG_2PI


def _scale_fraction(raw: Tensor) -> Tensor:
    """``t = σ(2·raw/b)`` with ``log σ = 2b·t − b = b·tanh(raw/b)`` (``b = 5``): the tanh bound in
    its sigmoid form, because ``torch.tanh`` costs ~9× ``torch.sigmoid`` on CPU (measured,
    float32, one thread)."""
    return torch.sigmoid(raw * (2 / _LOG_SCALE_BOUND))


def _bounded_log_scale(raw: Tensor) -> Tensor:
    """``5·tanh(raw/5)``, as ``10·t − 5`` (:func:`_scale_fraction`)."""
    return _scale_fraction(raw) * (2 * _LOG_SCALE_BOUND) - _LOG_SCALE_BOUND


def _check_shapes(drop_shape: tuple, context_shape: tuple) -> None:
    """Open (``None``) sizes are allowed after the channel dimension, where the context has one too."""
    for name, shape in (("drop_shape", drop_shape), ("context_shape", context_shape)):
        _checks.shape("inverse density", name, shape, allow_none=True)
        if shape[0] is None:
            raise ValueError(f"inverse density: the channel size of {name} must be given, got {shape}")
    for i, size in enumerate(drop_shape):
        if size is None and (len(context_shape) != len(drop_shape) or context_shape[i] is not None):
            raise ValueError(
                "inverse density: an open (None) size of drop_shape needs an open size at the same "
                f"position of context_shape, got drop_shape={drop_shape}, context_shape={context_shape}"
            )


class InverseDensity(nn.Module):
    """``p(d | c)`` as a diagonal normal whose parameters come from :meth:`params`.

    ``drop_shape`` may hold ``None`` for sizes taken from the context (see the module docstring).
    """

    def __init__(self, drop_shape: tuple[int | None, ...]) -> None:
        super().__init__()
        self.drop_shape = tuple(drop_shape)

    def params(self, kept: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(μ, log σ)``, each broadcastable to ``(B, *drop_shape)``.

        ``context`` is passed only when there is one, so a subclass written against the
        context-free ``params(self, kept)`` keeps working."""
        raise NotImplementedError

    def _params(self, kept: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.params(kept) if context is None else self.params(kept, context)

    def _full_shape(self, kept: Tensor) -> tuple[int, ...]:
        sizes = [c if d is None else d for d, c in zip(self.drop_shape, kept.shape[1:])]
        return (kept.shape[0], *sizes, *self.drop_shape[len(sizes):])

    def log_prob(self, d: Tensor, kept: Tensor, context: Tensor | None = None) -> Tensor:
        loc, log_scale = self._params(kept, context)
        return _normal_log_prob(d, loc, log_scale)

    def mean(self, kept: Tensor, context: Tensor | None = None) -> Tensor:
        loc, _ = self._params(kept, context)
        return loc.expand(self._full_shape(kept)).to(kept.dtype)

    def sample(self, kept: Tensor, context: Tensor | None = None) -> Tensor:
        loc, log_scale = self._params(kept, context)
        shape = self._full_shape(kept)
        eps = torch.randn(shape, dtype=kept.dtype, device=kept.device)
        return loc + torch.exp(log_scale) * eps

    def draw(self, kept: Tensor, context: Tensor | None = None, *, mean: bool) -> Tensor:
        """A sample of ``p(d | c)``, or its mean when ``mean=True`` (the inverse's two modes)."""
        return self.mean(kept, context) if mean else self.sample(kept, context)


class StandardNormalDensity(InverseDensity):
    """``p(d | c) = N(0, I)``."""

    def params(self, kept: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        zero = kept.new_zeros(())
        return zero, zero

    def log_prob(self, d: Tensor, kept: Tensor, context: Tensor | None = None) -> Tensor:
        return -0.5 * d.flatten(1).square().sum(1) - _HALF_LOG_2PI * math.prod(d.shape[1:])


class DiagonalNormalDensity(InverseDensity):
    """``p(d | c) = N(μ, diag σ²)`` with learned ``μ`` and ``log σ``.

    Open (``None``) sizes of ``drop_shape`` share the parameters along that dimension: for
    ``(M, None, None)`` there is one ``(μ, log σ)`` per channel.
    """

    def __init__(self, drop_shape: tuple[int | None, ...]) -> None:
        super().__init__(drop_shape)
        param_shape = tuple(1 if s is None else s for s in self.drop_shape)
        self.loc = nn.Parameter(torch.zeros(param_shape))
        self.log_scale = nn.Parameter(torch.zeros(param_shape))

    def params(self, kept: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.loc, self.log_scale


class ConditionalNormalDensity(InverseDensity):
    r"""``p(d | c) = N(μ(c), diag σ(c)²)``; a small network maps ``c`` to ``(μ, log σ)``.

    For vectors (``context_shape = (k,)``, ``drop_shape = (m,)``) the network is
    ``Linear(k, h) → GELU → Linear(h, 2m)``. For maps (``(C, H, W)`` → ``(M, H, W)``) it is two
    convolutions with same padding, ``Conv_a(C, h) → GELU → Conv_b(h, 2M)``, whose kernel sizes
    ``a-b`` ``net`` names: ``"3x3-3x3"`` (a 5×5 receptive field; the width of the old default),
    ``"3x3-1x1"`` (3×3) or ``"1x1-1x1"`` (each position alone). A map of any size (``H``, ``W``
    may be ``None``) works. Per position the network costs ``h·(a²·C + b²·2M)`` multiply-adds, so
    ``"3x3-1x1"`` with ``h = C`` costs ``C·(9C + 2M)``: the expensive ``2M``-wide layer is 1×1.

    The last layer starts at zero, so at initialization the density is ``N(0, I)``.
    ``log σ = 5·tanh(raw/5)`` is softly bounded for numerical stability.

    ``context_features=f`` (optional) makes it also conditional on a flow context ``a`` of shape
    ``(B, f)``: ``N(μ(c, a), diag σ(c, a)²)``. The network's input is ``[c, a]``, concatenated
    for vectors (``Linear(k + f, h)``); for maps ``a`` is broadcast over every position as ``f``
    extra channels (``Conv_a(C + f, h)``), so each position sees the whole context.
    """

    def __init__(
        self,
        drop_shape: tuple[int | None, ...],
        context_shape: tuple[int | None, ...],
        *,
        hidden: int = 64,
        context_features: int | None = None,
        net: MapNetKind = "3x3-3x3",
    ) -> None:
        _check_shapes(tuple(drop_shape), tuple(context_shape))
        hidden = _checks.positive_int("ConditionalNormalDensity", "hidden", hidden)
        extra = 0 if context_features is None else _checks.positive_int(
            "ConditionalNormalDensity", "context_features", context_features)
        _checks.choice("ConditionalNormalDensity", "net", net, MAP_NETS)
        super().__init__(drop_shape)
        self.context_shape = tuple(context_shape)
        self.context_features = context_features
        if len(self.drop_shape) == 1 and len(self.context_shape) == 1:
            last = nn.Linear(hidden, 2 * self.drop_shape[0])
            self.net = nn.Sequential(nn.Linear(self.context_shape[0] + extra, hidden), nn.GELU(), last)
        elif len(self.drop_shape) == 3 and len(self.context_shape) == 3:
            a, b = (int(side[0]) for side in net.split("-"))
            last = nn.Conv2d(hidden, 2 * self.drop_shape[0], b, padding=b // 2)
            self.net = nn.Sequential(
                nn.Conv2d(self.context_shape[0] + extra, hidden, a, padding=a // 2), nn.GELU(), last
            )
        else:
            raise ValueError(
                f"ConditionalNormalDensity: expected vector or (C, H, W) shapes of equal rank, got "
                f"drop_shape={self.drop_shape}, context_shape={self.context_shape}"
            )
        self.map_net = net if len(self.drop_shape) == 3 else None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def extra_repr(self) -> str:
        out = f"drop_shape={self.drop_shape}, context_shape={self.context_shape}"
        if self.map_net is not None:
            out += f", net={self.map_net!r}"
        return out if self.context_features is None else out + f", context_features={self.context_features}"

    def _net_input(self, kept: Tensor, context: Tensor | None) -> Tensor:
        if self.context_features is None:
            return kept
        # The owning layer has checked the context's shape (check_context) before calling here.
        context = context.to(kept.dtype)  # type: ignore[union-attr]
        if kept.dim() == 4:  # a map: the context vector at every position, as extra channels
            b, _, h, w = kept.shape
            context = context[:, :, None, None].expand(b, context.shape[1], h, w)
        return torch.cat([kept, context], dim=1)

    def _raw(self, kept: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(μ, raw)``, the network's two outputs."""
        x = self._net_input(kept, context)
        if self.map_net is not None:
            return self._map_params(x)
        return self.net(x).chunk(2, dim=1)

    def params(self, kept: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        loc, raw = self._raw(kept, context)
        # A soft bound on log σ keeps early training and float32 stable; |log σ| < 5.
        return loc, _bounded_log_scale(raw)

    def log_prob(self, d: Tensor, kept: Tensor, context: Tensor | None = None) -> Tensor:
        r"""``Σ log N(d; μ, σ²)`` with ``log σ = 2b·t − b``, ``t = sigmoid(2·raw/b)`` (``b = 5``;
        :func:`_bounded_log_scale`): ``Σ log σ = 2b·Σt − n·b`` is summed before it is scaled,
        and ``1/σ = exp(b − 2b·t)``, so no ``log σ`` map is formed. (Scaling a map only by
        constants would also give its gradient the default memory layout instead of the map's;
        mixing layouts costs a slow permuting copy in the backward pass.)"""
        loc, raw = self._raw(kept, context)
        t = _scale_fraction(raw)
        u = (d - loc) * torch.exp(_LOG_SCALE_BOUND - (2 * _LOG_SCALE_BOUND) * t)
        dims = tuple(range(1, d.dim()))
        n = math.prod(d.shape[1:])
        return (-0.5 * u.square().sum(dims) - (2 * _LOG_SCALE_BOUND) * t.sum(dims)
                + n * (_LOG_SCALE_BOUND - _HALF_LOG_2PI))

    def _map_params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The network on a map ``(B, C, H, W)``: ``(μ, raw)`` laid out position-major
        (``(H, W, B, M)`` in memory), as :class:`~survae_flowify.PatchLinear` lays out the dropped
        coordinates: elementwise work between tensors of different layouts is several times slower
        than within one layout (measured, CPU). 1×1 layers run as products on the rows
        ``(H·W·B, ·)``; 3×3 layers see channels-last maps, one cheap block transpose away from
        the rows (``(H·W, B, C) ↔ (B, H·W, C)``), which also spares their backward a permuting copy."""
        first, _, last = self.net
        b, _, h, w = x.shape
        if first.kernel_size == (1, 1):
            hidden = F.gelu(F.linear(to_rows(x), first.weight.flatten(1), first.bias))
        else:
            hidden = to_rows(F.gelu(first(x.contiguous(memory_format=torch.channels_last))))
        m = self.drop_shape[0]
        if last.kernel_size == (1, 1):  # two products: no chunk, whose backward would concatenate
            weight, bias = last.weight.flatten(1), last.bias
            outs = (F.linear(hidden, weight[:m], bias[:m]), F.linear(hidden, weight[m:], bias[m:]))
        else:
            maps = to_map(hidden, b, h, w)
            outs = to_rows(last(maps.contiguous(memory_format=torch.channels_last))).chunk(2, dim=1)
        return tuple(to_map(o, b, h, w) for o in outs)  # type: ignore[return-value]



def make_inverse_density(
    kind: InverseDensityKind,
    drop_shape: tuple[int | None, ...],
    context_shape: tuple[int | None, ...],
    *,
    hidden: int = 64,
    context_features: int | None = None,
    net: MapNetKind = "3x3-3x3",
    owner: str = "make_inverse_density",
) -> InverseDensity:
    """Build the inverse density named by ``kind`` (``"normal"``, ``"diagonal"``, ``"conditional"``).

    ``None`` in the shapes leaves a (spatial) size open; see the module docstring. ``hidden`` is
    the width of the conditional network (checked for every kind, so a typo never waits for a
    switch of kind). ``context_features`` makes the conditional density see a flow context too; it
    needs ``kind="conditional"`` (the other kinds could not use it). ``owner`` (the layer asking)
    names errors. ``net``: the two convolutions of a conditional density over maps (see
    :class:`ConditionalNormalDensity`; checked for every kind, unused by vectors).
    """
    _checks.choice(owner, "inverse_density", kind, INVERSE_DENSITY_KINDS)
    _checks.positive_int(owner, "hidden", hidden)
    _checks.choice(owner, "density_net", net, MAP_NETS)
    check_context_features(owner, context_features, kind)
    _check_shapes(tuple(drop_shape), tuple(context_shape))
    if kind == "normal":
        return StandardNormalDensity(drop_shape)
    if kind == "diagonal":
        return DiagonalNormalDensity(drop_shape)
    return ConditionalNormalDensity(drop_shape, context_shape, hidden=hidden,
                                    context_features=context_features, net=net)


def check_context_features(owner: str, context_features: object, kind: object) -> int | None:
    """``context_features`` (``None`` or a positive int), which only ``kind="conditional"`` uses."""
    if context_features is None:
        return None
    features = _checks.positive_int(owner, "context_features", context_features)
    if kind != "conditional":
        raise ValueError(
            f"{owner}: context_features={features} needs inverse_density='conditional' (the only "
            f"inverse density that sees a context), got inverse_density={kind!r}"
        )
    return features
