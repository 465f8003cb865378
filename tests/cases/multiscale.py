"""Battery cases for the multi-scale builder: the transform of a tiny ``models.multiscale`` flow
(squeezes, ActNorm, Conv1x1, couplings and two Slices with conditional split priors)."""

from __future__ import annotations

import torch

from survae_flowify import Transform, models
from tests.cases.base import Case

_SHAPE = (2, 4, 4)


def _multiscale(coupling: str, context_features: int | None = None) -> Transform:
    """Past ActNorm's data-dependent initialisation (one training batch off the origin), so the
    battery's first training-mode forward does not re-initialise it."""
    flow = models.multiscale(_SHAPE, scales=2, steps=1, coupling=coupling, hidden=8,
                             context_features=context_features)
    gen = torch.Generator().manual_seed(4)
    batch = 2.0 * torch.randn(16, *_SHAPE, generator=gen) + 0.5
    context = None if context_features is None else torch.randn(16, context_features, generator=gen)
    flow.transform(batch, context)
    return flow.transform


CASES: dict[str, Case] = {
    "multiscale_affine": Case(lambda: _multiscale("affine"), _SHAPE, log_det=False),
    "multiscale_spline_context": Case(lambda: _multiscale("spline", 3), _SHAPE, log_det=False,
                                      context_features=3),
}
