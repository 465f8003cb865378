"""Empty batches (B = 0) give ``(0,)`` results, never a crash (issue 8, item 7).

Every model of ``models.MODEL_NAMES`` (its ``log_prob``, the chunked importance-weighted bound,
the augmentation gap and the bits/dim) takes an empty batch; ``breakdown`` lists the layers with
NaN means. The battery runs B = 0 through every transform case (``tests/test_battery.py``).
"""

from __future__ import annotations

import math

import pytest
import torch

import survae_flowify as ffn
from survae_flowify import models

_SHAPES = {"tabular-mlp": (6,), "small-mlp": (6,), "survae-abs": (2,)}
_IMAGE = (1, 28, 28)


def _model(name: str) -> tuple[ffn.Flow, torch.Tensor]:
    torch.manual_seed(0)
    if name in _SHAPES:
        return models.build(name, _SHAPES[name]), torch.zeros(0, *_SHAPES[name])
    shape = (1, 8, 8) if name == "small-conv" else _IMAGE
    return models.build(name, shape, levels=256), torch.zeros(0, *shape, dtype=torch.uint8)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_model_on_empty_batch(name: str) -> None:
    flow, x = _model(name)
    with torch.no_grad():
        assert flow.log_prob(x).shape == (0,)
        assert flow.log_prob(x, num_samples=5, chunk_size=2).shape == (0,)
        gap = flow.augmentation_gap(x, num_samples=3, chunk_size=2)
        assert gap.gap.shape == gap.elbo.shape == gap.iw_bound.shape == (0,)
        assert flow.bits_per_dim(x).shape == (0,)
        assert flow.reconstruct(x).shape == x.shape


def test_empty_batch_trains() -> None:
    """A zero-sample loss still back-propagates (gradients are zero, not errors)."""
    flow, x = _model("small-mlp")
    flow.log_prob(x).sum().backward()
    assert all(p.grad is None or torch.all(p.grad == 0) for p in flow.parameters())


def test_breakdown_of_empty_batch_shows_the_layers_and_no_number() -> None:
    """A mean over no sample is undefined: NaN (as ``torch.mean``), never a made-up 0."""
    flow, x = _model("small-mlp")
    table = flow.breakdown(x)
    assert [r[0] for r in table.rows] == [r[0] for r in flow.breakdown(torch.randn(2, 6)).rows]
    assert all(math.isnan(r[3]) for r in table.rows) and math.isnan(table.total)
    assert table.rows[-1][4] == flow.base.shape
    assert "nan" in str(table)
