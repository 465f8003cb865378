r"""SurVAE Flows' experiments as ready models (Nielsen et al. 2020, §5): ``survae-abs`` and
``survae-maxpool``, each with its twin without the surjection, on the same budget.

**Abs flow** (2-D toy densities, or any vectors ``(D,)``). For a density symmetric under sign
flips, ``p(x) = p(|x|)\,/\,2^D``: the absolute value folds the ``2^D`` orthants onto one, and the
rest of the flow only has to model the positive orthant:

$$ x \xrightarrow{\text{Abs}} y = |x| \xrightarrow{\text{InverseSoftplus}} \log(e^{y} - 1)
   \xrightarrow{\text{ActNorm}} \cdots \xrightarrow{K \times (\text{RqCoupling} \to
   \text{Reverse})} z \sim N(0, I), \qquad
   \log p(x) = \log p(s \mid y) + \log p_{\text{rest}}(y), $$

``s = \operatorname{sign}(x)`` with ``p(s | y)`` the sign density of :class:`~survae_flowify.Abs`
(learned Bernoulli logits, or ``½`` per coordinate). The rest of the flow is a density on the
positive orthant: :class:`InverseSoftplus` maps ``(0, ∞)^D`` onto ``ℝ^D`` (SurVAE's toy
experiment does the same with its ``SoftplusInverse`` range flow), so every base draw inverts to
a valid ``y > 0`` and sampling draws from the density that ``log_prob`` scores. The flow is exact:
``p(s | y)`` sums to 1 over the ``2^D`` sign patterns, so ``∫ p(x) dx = ∫_{y>0} p_{rest}(y) dy = 1``.
``abs=False`` is the twin: ActNorm and the same couplings on ``x`` itself (no range map: ``x``
takes any sign). ``Abs`` helps where the density is symmetric under flipping each coordinate on
its own (eight Gaussians, rings); its sign density is one Bernoulli per coordinate given ``|x|``,
so it cannot express signs that are correlated given ``|x|``: the checkerboard, symmetric only
under flipping both coordinates at once, costs up to ``log 2`` nats more with it than without.

**Max-pooling flow** (SurVAE's ``PoolFlow``, images ``(C, H, W)``):

$$ \text{Dequantize} \to \text{Squeeze}(2) \to
   \big[K \times (\text{ActNorm} \to \text{Conv1x1} \to \text{coupling}) \to
   \text{MaxPool2d}(2)\big]^{P} \to K \times (\dots) \to \text{ActNorm} \to N(0, I), $$

each :class:`~survae_flowify.MaxPool2d` keeping the maximum of every ``2 × 2`` patch,
``(4C, h, w) → (4C, h/2, w/2)``: three quarters of the dimensions go, scored by
``log p(index | z) + Σ log p(gap | z)`` (exact; a conv net on ``z`` predicts the index logits and
the gaps' scales). The twin ``pool="slice"`` drops the same number of dimensions with
:class:`~survae_flowify.Squeeze` ``(2)`` and a :class:`~survae_flowify.Slice` keeping the first
quarter of the channels, ``(4C, h, w) → (16C, h/2, w/2) → (4C, h/2, w/2)``, with a conditional
normal (a conv net on what it keeps) for what it drops: both reductions see ``z`` alike. Both are
exact; their bits/dim compare which reduction loses less (``benchmarks/survae.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
from torch import Tensor

from survae_flowify import _checks, _state
from survae_flowify.algebra import Bijection, Flow, Sequential, Transform
from survae_flowify.bijections import ActNorm, AffineCoupling, Conv1x1, Reverse, RqCoupling, Squeeze
from survae_flowify.distributions import StandardNormal
from survae_flowify.surjections import Abs, MaxPool2d
from survae_flowify.transforms import Dequantize, Slice

__all__ = ["MAXPOOL_DEFAULTS", "InverseSoftplus", "abs_flow", "maxpool_flow"]

Pooling = Literal["max", "slice"]
POOLINGS: tuple[Pooling, ...] = ("max", "slice")
CouplingKind = Literal["affine", "spline"]
COUPLING_KINDS: tuple[CouplingKind, ...] = ("affine", "spline")
SignDensity = Literal["learned", "uniform"]
SIGN_DENSITIES: tuple[SignDensity, ...] = ("learned", "uniform")

# After InverseSoftplus and ActNorm's data-dependent start the toy data has unit variance per
# coordinate, so splines on [−3, 3] cover nearly all of it, with linear tails beyond.
ABS_TAIL_BOUND = 3.0

MAXPOOL_DEFAULTS: dict[tuple[int, int], dict[str, int]] = {
    (8, 8): {"steps": 4, "hidden": 64},     # digits: (4, 4, 4) → pool → (4, 2, 2)
    (28, 28): {"steps": 6, "hidden": 96},   # MNIST, Fashion-MNIST: (4, 14, 14) → pool → (4, 7, 7)
}
"""``survae-maxpool`` by image size (H, W): flow steps per resolution and coupling-network width
(one pooling layer: 8 → 4 → 2 and 28 → 14 → 7). Other sizes take :func:`maxpool_flow`'s defaults."""


class InverseSoftplus(Bijection):
    r"""``z = \log(e^{y} - 1)`` elementwise: the positive reals onto the real line (any event shape).

    The inverse of ``softplus(z) = log(1 + e^z)``. Computed as ``z = y + log(1 − e^{−y})``, which
    neither overflows for large ``y`` nor loses ``y`` near 0; contribution
    ``V = Σ_i log (dz_i/dy_i) = Σ_i −log(1 − e^{−y_i}) = Σ_i (y_i − z_i)``. Inverse
    ``y = softplus(z)``. Input must be ``> 0``: with validation on, a negative entry raises a
    ``ValueError``; ``y = 0`` (a set of measure zero, e.g. ``|x|`` of an exact 0) is moved to the
    smallest positive number of its dtype so that ``z`` stays finite.
    """

    def _forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if _state.validation_enabled() and y.numel() and bool((y < 0).any()):
            raise ValueError(f"InverseSoftplus: input must be >= 0 (it maps (0, ∞) onto ℝ), got a "
                             f"minimum of {float(y.min()):g}")
        y = y.clamp_min(torch.finfo(y.dtype).tiny)
        z = y + torch.log(-torch.expm1(-y))
        return z, (y - z).flatten(1).sum(1)

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return torch.nn.functional.softplus(z)


def abs_flow(
    shape: int | tuple[int, ...] = (2,),
    *,
    abs: bool = True,
    couplings: int = 6,
    num_bins: int = 8,
    hidden: int = 64,
    sign_density: SignDensity | None = None,
) -> Flow:
    r"""``[Abs → InverseSoftplus] → ActNorm → RqCoupling → Reverse → … → RqCoupling`` over vectors
    ``(D,)``, base ``N(0, I_D)`` (math in the module docstring).

    - ``abs``: put :class:`~survae_flowify.Abs` and :class:`InverseSoftplus` first (default), or
      not (the twin: the same ActNorm and couplings).
    - ``couplings``: the number of :class:`~survae_flowify.RqCoupling` layers (``num_bins`` bins on
      ``[−3, 3]``, two hidden layers of ``hidden``), a :class:`~survae_flowify.Reverse` between each two.
    - ``sign_density``: the Abs layer's ``"learned"`` (default) or ``"uniform"`` sign density;
      only with ``abs=True``.
    """
    owner = "abs_flow"
    event = _checks.shape(owner, "shape", shape)
    if len(event) != 1 or event[0] < 2:
        raise ValueError(f"{owner}: shape must be a vector shape (D,) with D >= 2 (e.g. (2,) for "
                         f"the 2-D toy densities), got {event}")
    use_abs = _checks.boolean(owner, "abs", abs)
    couplings = _checks.positive_int(owner, "couplings", couplings)
    hidden = _checks.positive_int(owner, "hidden", hidden)
    if sign_density is not None and not use_abs:
        raise ValueError(f"{owner}: sign_density={sign_density!r} applies only with abs=True "
                         "(the Abs layer's sign density), got abs=False")
    parts: OrderedDict[str, Transform] = OrderedDict()
    if use_abs:
        density = _checks.choice(owner, "sign_density", sign_density or "learned", SIGN_DENSITIES)
        parts["abs"] = Abs(event, sign_density=density, hidden=hidden)
        parts["positive_to_real"] = InverseSoftplus()
    parts["actnorm"] = ActNorm(event)
    for k in range(1, couplings + 1):
        if k > 1:
            parts[f"reverse{k - 1}"] = Reverse()
        parts[f"coupling{k}"] = RqCoupling(event, num_bins=num_bins, tail_bound=ABS_TAIL_BOUND,
                                           hidden=hidden)
    return Flow(StandardNormal(*event), Sequential(parts))


def _check_image(owner: str, shape: object, pools: int) -> tuple[int, int, int]:
    image = _checks.shape(owner, "shape", shape)
    if len(image) != 3:
        raise ValueError(f"{owner}: shape must be an image shape (C, H, W), got {image}")
    factor = 2 ** (pools + 1)  # the first squeeze, then one halving per pooling layer
    if image[1] % factor or image[2] % factor:
        raise ValueError(
            f"{owner}: images of shape {image} cannot be squeezed once and pooled pools={pools} "
            f"time(s): H and W must be divisible by 2**{pools + 1} = {factor}, got H={image[1]}, "
            f"W={image[2]}")
    return image  # type: ignore[return-value]


def _steps(parts: OrderedDict[str, Transform], prefix: str, shape: tuple[int, int, int], steps: int,
           coupling: CouplingKind, hidden: int) -> None:
    """Append ``steps`` × (ActNorm → Conv1x1 → coupling) over maps of ``shape``."""
    make = AffineCoupling if coupling == "affine" else RqCoupling
    for k in range(1, steps + 1):
        parts[f"{prefix}_actnorm{k}"] = ActNorm(shape)
        parts[f"{prefix}_conv1x1_{k}"] = Conv1x1(shape[0])
        parts[f"{prefix}_coupling{k}"] = make(shape, hidden=hidden)


def _reduce(parts: OrderedDict[str, Transform], name: str, pool: Pooling, shape: tuple[int, int, int],
            hidden: int) -> None:
    """Halve H and W: ``MaxPool2d(2)``, or ``Squeeze(2)`` then a ``Slice`` keeping ``C`` of ``4C``."""
    c, h, w = shape
    if pool == "max":
        parts[name] = MaxPool2d(2, channels=c, inverse_density="conditional", hidden=hidden)
        return
    parts[f"{name}_squeeze"] = Squeeze(2)
    parts[f"{name}_slice"] = Slice((4 * c, h // 2, w // 2), c, inverse_density="conditional",
                                   hidden=hidden)


def maxpool_flow(
    shape: tuple[int, int, int],
    *,
    pool: Pooling = "max",
    pools: int = 1,
    steps: int = 4,
    coupling: CouplingKind = "affine",
    hidden: int = 64,
    levels: int | None = None,
) -> Flow:
    r"""SurVAE's max-pooling flow over images ``shape = (C, H, W)`` (math in the module docstring).

    ``[Dequantize(levels)] → Squeeze(2) → pools × (steps × (ActNorm → Conv1x1 → coupling) →
    reduction) → steps × (…) → ActNorm``, base ``N(0, I)`` over ``(4C, H/2^{P+1}, W/2^{P+1})``.

    - ``pool``: the reduction, ``"max"`` (:class:`~survae_flowify.MaxPool2d` ``(2)`` with its
      ``"conditional"`` inverse density) or ``"slice"`` (``Squeeze(2)`` and a
      :class:`~survae_flowify.Slice` with a conditional normal for the three quarters it drops:
      the same sizes).
    - ``pools``: the number of reductions; ``H`` and ``W`` must be divisible by ``2**(pools + 1)``.
    - ``steps``: flow steps at every resolution; ``coupling``: ``"affine"``
      (:class:`~survae_flowify.AffineCoupling`) or ``"spline"`` (:class:`~survae_flowify.RqCoupling`);
      ``hidden``: the width of the couplings' conv nets and of the reduction's density network.
    - ``levels``: prepend ``Dequantize(levels)`` for integer images; ``None`` for continuous data.
    """
    owner = "maxpool_flow"
    pool = _checks.choice(owner, "pool", pool, POOLINGS)
    pools = _checks.positive_int(owner, "pools", pools)
    steps = _checks.positive_int(owner, "steps", steps)
    coupling = _checks.choice(owner, "coupling", coupling, COUPLING_KINDS)
    hidden = _checks.positive_int(owner, "hidden", hidden)
    if levels is not None:
        levels = _checks.integer(owner, "levels", levels, minimum=2)
    c, h, w = _check_image(owner, shape, pools)
    parts: OrderedDict[str, Transform] = OrderedDict()
    if levels is not None:
        parts["dequantize"] = Dequantize(levels)
    parts["squeeze"] = Squeeze(2)
    c, h, w = 4 * c, h // 2, w // 2
    for p in range(1, pools + 1):
        _steps(parts, f"scale{p}", (c, h, w), steps, coupling, hidden)
        _reduce(parts, f"pool{p}", pool, (c, h, w), hidden)
        h, w = h // 2, w // 2
    _steps(parts, "final", (c, h, w), steps, coupling, hidden)
    parts["final_actnorm"] = ActNorm((c, h, w))
    return Flow(StandardNormal(c, h, w), Sequential(parts))

