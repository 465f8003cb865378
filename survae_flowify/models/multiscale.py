r"""Multi-scale flows (RealNVP §3.6, Glow §3) with a learned conditional split prior.

For images ``x ∈ ℝ^{C×H×W}`` and ``L = scales`` scales, each scale ``ℓ = 1 … L`` is

$$ \text{Squeeze}(2) \;→\; K \times (\text{ActNorm} → \text{Conv1x1} → \text{coupling})
   \;→\; \text{Slice}, $$

``Squeeze(2)`` turning ``(C, H, W)`` into ``(4C, H/2, W/2)`` and the ``Slice`` keeping the first
half of the channels, ``z_ℓ``, and dropping the other half, ``d_ℓ``. The dropped half gets the
split prior ``p(d_ℓ | z_ℓ) = N(μ(z_ℓ), diag σ(z_ℓ)²)``, whose mean and log-scale a small conv net
predicts from what is kept (the Slice's conditional inverse density). After the last scale a final
block of ``K`` steps runs at the last resolution, and the base ``N(0, I)`` scores what is left:

$$ \log p(x) = \sum_{\text{bijections}} \log\left|\det \frac{∂h_i}{∂h_{i-1}}\right|
   + \sum_{ℓ=1}^{L} \log p(d_ℓ \mid z_ℓ) + \log p(z_{\text{final}}). $$

Each Slice is an inference surjection with ``forward(inverse(z)) = z`` (it samples ``d_ℓ`` and
keeps ``z_ℓ`` as it is), so the likelihood is exact (``flow.exact``). With ``context_features=c``
every coupling and every split prior also sees the flow context ``a`` (``(B, c)``), and the base
is ``ConditionalNormal``: ``p(x | a)``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from survae_flowify import _checks
from survae_flowify.algebra import Flow, Sequential, Transform
from survae_flowify.bijections import ActNorm, AffineCoupling, Conv1x1, RqCoupling, Squeeze
from survae_flowify.distributions import ConditionalNormal, StandardNormal
from survae_flowify.transforms import Dequantize, Slice

__all__ = ["multiscale"]

CouplingKind = Literal["affine", "spline"]
COUPLING_KINDS: tuple[CouplingKind, ...] = ("affine", "spline")
_OWNER = "multiscale"


def _check_shape(shape: object, scales: int) -> tuple[int, int, int]:
    image = _checks.shape(_OWNER, "shape", shape)
    if len(image) != 3:
        raise ValueError(f"{_OWNER}: shape must be an image shape (C, H, W), got {image}")
    factor = 2**scales
    if image[1] % factor or image[2] % factor:
        raise ValueError(
            f"{_OWNER}: shape {image} cannot be squeezed scales={scales} times: H and W must be "
            f"divisible by 2**{scales} = {factor}, got H={image[1]}, W={image[2]}"
        )
    return image  # type: ignore[return-value]


def _steps(parts: OrderedDict[str, Transform], prefix: str, shape: tuple[int, int, int], steps: int,
           coupling: CouplingKind, coupling_kwargs: dict[str, object]) -> None:
    """Append ``steps`` × (ActNorm → Conv1x1 → coupling) over maps of ``shape``."""
    make = AffineCoupling if coupling == "affine" else RqCoupling
    for k in range(1, steps + 1):
        parts[f"{prefix}_actnorm{k}"] = ActNorm(shape)
        parts[f"{prefix}_conv1x1_{k}"] = Conv1x1(shape[0])
        parts[f"{prefix}_coupling{k}"] = make(shape, **coupling_kwargs)


def multiscale(
    shape: tuple[int, int, int],
    *,
    scales: int = 2,
    steps: int = 4,
    coupling: CouplingKind = "affine",
    hidden: int = 64,
    num_bins: int | None = None,
    tail_bound: float | None = None,
    context_features: int | None = None,
    levels: int | None = None,
) -> Flow:
    r"""A Glow-style multi-scale flow over images of event shape ``shape = (C, H, W)``.

    ``[Dequantize(levels)] → scales × (Squeeze(2) → steps × (ActNorm → Conv1x1 → coupling) →
    Slice(keep half the channels, conditional split prior)) → steps × (ActNorm → Conv1x1 →
    coupling)``, base ``N(0, I)`` over ``(C·2^scales, H/2^scales, W/2^scales)`` (the channels are
    ``C·4^ℓ/2^ℓ = C·2^ℓ`` after scale ``ℓ``). The math is in the module docstring.

    - ``scales``: the number of squeeze/split scales; ``H`` and ``W`` must be divisible by
      ``2**scales``.
    - ``steps``: flow steps per scale and in the final block.
    - ``coupling``: ``"affine"`` (:class:`~survae_flowify.AffineCoupling`) or ``"spline"``
      (:class:`~survae_flowify.RqCoupling` with ``num_bins`` bins on ``[−tail_bound, tail_bound]``,
      by default RqCoupling's 8 bins and bound 3; both are refused with ``"affine"``, which has none).
    - ``hidden``: the width of the couplings' conv nets (two hidden layers) and of the split
      priors' conv nets.
    - ``context_features``: a context ``(B, c)`` seen by every coupling and split prior, and a
      :class:`~survae_flowify.ConditionalNormal` base.
    - ``levels``: prepend ``Dequantize(levels)`` for integer images in ``{0, …, levels − 1}``
      (as the other image models do); ``None`` for continuous data.
    """
    scales = _checks.positive_int(_OWNER, "scales", scales)
    steps = _checks.positive_int(_OWNER, "steps", steps)
    coupling = _checks.choice(_OWNER, "coupling", coupling, COUPLING_KINDS)
    hidden = _checks.positive_int(_OWNER, "hidden", hidden)
    if context_features is not None:
        context_features = _checks.positive_int(_OWNER, "context_features", context_features)
    if levels is not None:
        levels = _checks.integer(_OWNER, "levels", levels, minimum=2)
    c, h, w = _check_shape(shape, scales)
    coupling_kwargs: dict[str, object] = {"hidden": hidden, "context_features": context_features}
    for name, value in (("num_bins", num_bins), ("tail_bound", tail_bound)):
        if value is None:
            continue
        if coupling == "affine":
            raise ValueError(f"{_OWNER}: {name}={value!r} applies only to coupling='spline', got "
                             "coupling='affine'")
        check = _checks.positive_int if name == "num_bins" else _checks.positive_float
        coupling_kwargs[name] = check(_OWNER, name, value)

    parts: OrderedDict[str, Transform] = OrderedDict()
    if levels is not None:
        parts["dequantize"] = Dequantize(levels)
    for scale in range(1, scales + 1):
        parts[f"squeeze{scale}"] = Squeeze(2)
        c, h, w = 4 * c, h // 2, w // 2
        _steps(parts, f"scale{scale}", (c, h, w), steps, coupling, coupling_kwargs)
        parts[f"split{scale}"] = Slice((c, h, w), c // 2, inverse_density="conditional", hidden=hidden,
                                       context_features=context_features)
        c //= 2
    _steps(parts, "final", (c, h, w), steps, coupling, coupling_kwargs)
    base = (StandardNormal(c, h, w) if context_features is None
            else ConditionalNormal((c, h, w), context_features, hidden=hidden))
    return Flow(base, Sequential(parts))
