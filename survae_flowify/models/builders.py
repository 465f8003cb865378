"""Generic builders of flowified networks: conv nets and MLPs as :class:`~survae_flowify.Flow`.

The paper's models (:mod:`survae_flowify.models.paper`) and the small ones
(:mod:`survae_flowify.models.small`) are tables of sizes fed to these. Every reducing layer gets a
conditional inverse density by default (``inverse_density="conditional"``, as in the paper) and
every activation is one rational-quadratic spline (10 bins, linear tails, bound 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from survae_flowify.algebra import Flow, Sequential, Transform
from survae_flowify.distributions import StandardNormal
from survae_flowify.layers.conv import Conv2d
from survae_flowify.layers.linear import Linear
from survae_flowify.models.nsf import nsf_stack
from survae_flowify.transforms import Dequantize, Flatten, RqSpline

__all__ = ["ConvSpec", "conv_output_size", "image_flow", "mlp_flow"]

ConvSpec = tuple[int, int, int]  # (out_channels, kernel_size, stride)


def conv_output_size(size: int, kernel_size: int, stride: int) -> int:
    """Spatial size after ``Conv2d``: pad so the kernel tiles, then ``(H + p − k)/s + 1``."""
    pad = (-(size - kernel_size)) % stride
    return (size + pad - kernel_size) // stride + 1


def image_flow(
    shape: tuple[int, int, int],
    convs: Sequence[ConvSpec],
    widths: Sequence[int],
    *,
    levels: int | None = 256,
    couplings_after_conv: Sequence[int] | None = None,
    dense_plan: Sequence[tuple[int | None, int]] | None = None,
    final_spline: bool = True,
    **layer_kwargs: object,
) -> Flow:
    """A flowified conv net: ``[Dequantize] → (Conv2d → RqSpline)* → Flatten → (Linear → RqSpline)*``.

    ``convs``: ``(out_channels, kernel_size, stride)`` per convolution. ``widths``: output sizes of
    the Linear layers after flattening. ``couplings_after_conv[i] > 0`` inserts an NSF coupling
    stack after convolution ``i``; ``dense_plan`` (``(width or None, couplings)``) replaces
    ``widths`` for the "+NSF" variants: an optional Linear to ``width`` then a coupling stack.
    ``layer_kwargs`` go to every Linear and Conv2d (e.g. ``inverse_density``, ``noise``, ``hidden``:
    the width of the conditional inverse densities' networks).
    """
    kwargs = {"inverse_density": "conditional", **layer_kwargs}
    parts: list[Transform] = [Dequantize(levels)] if levels else []
    c, h, w = shape
    for i, (out_c, k, s) in enumerate(convs):
        parts += [Conv2d(c, out_c, k, s, image_size=(h, w), **kwargs), RqSpline()]
        c, h, w = out_c, conv_output_size(h, k, s), conv_output_size(w, k, s)
        if couplings_after_conv and couplings_after_conv[i]:
            parts.append(nsf_stack((c, h, w), couplings_after_conv[i]))
    parts.append(Flatten((c, h, w)))
    features = c * h * w
    if dense_plan is not None:
        for width, couplings in dense_plan:
            if width is not None:
                parts += [Linear(features, width, **kwargs), RqSpline()]
                features = width
            parts.append(nsf_stack((features,), couplings))
    else:
        for i, width in enumerate(widths):
            parts.append(Linear(features, width, **kwargs))
            if final_spline or i < len(widths) - 1:
                parts.append(RqSpline())
            features = width
    return Flow(StandardNormal(features), Sequential(*parts))


def mlp_flow(
    shape: tuple[int, ...],
    widths: Sequence[int],
    *,
    levels: int | None = None,
    **layer_kwargs: object,
) -> Flow:
    """``[Dequantize] → [Flatten] → (Linear → RqSpline)*`` ending in a Linear to ``widths[-1]``.

    ``layer_kwargs`` go to every Linear (e.g. ``inverse_density``, ``noise``, ``hidden``).
    """
    kwargs = {"inverse_density": "conditional", **layer_kwargs}
    parts: list[Transform] = [Dequantize(levels)] if levels else []
    if len(shape) > 1:
        parts.append(Flatten(tuple(shape)))
    features = math.prod(shape)
    for i, width in enumerate(widths):
        parts.append(Linear(features, width, **kwargs))
        if i < len(widths) - 1:
            parts.append(RqSpline())
        features = width
    return Flow(StandardNormal(features), Sequential(*parts))
