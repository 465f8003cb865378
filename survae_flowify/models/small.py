"""Small flowified models for quick runs on CPU (the demo, tests, toy data).

Both take ``context_features=k`` and ``embedding=`` (passed on to the builders of
:mod:`survae_flowify.models.builders`) for a conditional variant, e.g. class-conditional with
``embedding=OneHot(k)``: a ``ConditionalNormal`` base, and the context at every reducing layer
with a conditional inverse density.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from survae_flowify.algebra import Flow
from survae_flowify.models.builders import image_flow, mlp_flow

__all__ = ["small_conv", "small_mlp"]


def small_mlp(
    shape: tuple[int, ...],
    *,
    widths: Sequence[int] | None = None,
    levels: int | None = None,
    **layer_kwargs: object,
) -> Flow:
    """``[Dequantize] → [Flatten] → (Linear → RqSpline)*`` ending in ``Linear``.

    ``widths`` defaults to ``[D, D, D/2, D/4]`` for ``D`` data dimensions (at least 2 each), so the
    model is a bijection, then two exact reductions (conditional inverse densities).
    """
    d = math.prod(shape)
    if widths is None:
        widths = [d, d, max(2, d // 2), max(2, d // 4)] if d >= 8 else [d, d, d]
    return mlp_flow(shape, widths, levels=levels, **layer_kwargs)


def small_conv(
    shape: tuple[int, int, int], *, levels: int | None = None, **layer_kwargs: object
) -> Flow:
    """Non-overlapping 2×2 stride-2 convolutions that multiply channels by 4 (square kernels, so
    each is exact) until the map is at most 2×2, then a small MLP halving the width twice."""
    c, h, w = shape
    convs = []
    while min(h, w) > 2:
        convs.append((4 * c, 2, 2))
        c, h, w = 4 * c, (h + 1) // 2, (w + 1) // 2
    d = c * h * w
    widths = [d, max(2, d // 2), max(2, d // 4)]
    return image_flow(shape, convs, widths, levels=levels, final_spline=False, **layer_kwargs)
