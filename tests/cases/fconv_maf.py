"""Battery case for ``models.fconv_maf``: a learned squeeze (flowified 2×2 convolution and
spline), flowified 1×1 convolutions and affine MADE steps over (1, 4, 4)."""

from __future__ import annotations

from survae_flowify import Transform, models
from tests.cases.base import Case

_SHAPE = (1, 4, 4)


def _fconv_maf() -> Transform:
    return models.fconv_maf(_SHAPE, squeezes=1, steps=2, hidden=8, levels=None).transform


CASES: dict[str, Case] = {
    "fconv_maf": Case(_fconv_maf, _SHAPE, log_det=True),
}
