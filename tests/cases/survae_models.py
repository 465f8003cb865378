"""Battery cases for the bijection the SurVAE models add (``models.survae.InverseSoftplus``).

It maps ``(0, ∞)`` onto ``ℝ``, so its input is positive: ``|N(0, 1)| + 0.05`` keeps the entries
away from 0, where ``log(e^y − 1)`` is steep and float32 round trips lose digits.
"""

from __future__ import annotations

import torch

from survae_flowify.models.survae import InverseSoftplus
from tests.cases.base import Case


def _positive(shape: tuple[int, ...]):
    return lambda batch, dtype: torch.randn(batch, *shape, dtype=dtype).abs() + 0.05


CASES: dict[str, Case] = {
    "inverse_softplus": Case(InverseSoftplus, (3,), sample_input=_positive((3,))),
    "inverse_softplus_image": Case(InverseSoftplus, (2, 3, 3), sample_input=_positive((2, 3, 3))),
}
