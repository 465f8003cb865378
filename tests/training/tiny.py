"""Tiny flows built from the core layers, for fast training tests."""

from __future__ import annotations

import math

import survae_flowify as ffn


def tiny_flow(shape: tuple[int, ...], *, levels: int | None = None) -> ffn.Flow:
    """``[Dequantize] → [Flatten] → RqSpline → Slice(½, conditional) → RqSpline``.

    Exact (no generative surjection other than dequantization); a few thousand parameters.
    """
    d = math.prod(shape)
    parts = [ffn.Dequantize(levels)] if levels else []
    if len(shape) > 1:
        parts.append(ffn.Flatten(tuple(shape)))
    keep = max(1, d // 2)
    parts += [ffn.RqSpline(), ffn.Slice((d,), keep, inverse_density="conditional"), ffn.RqSpline()]
    return ffn.Flow(ffn.StandardNormal(keep), ffn.Sequential(*parts))
