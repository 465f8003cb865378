"""``models.fconv_maf`` (the quality benchmark's "ours"): its exact likelihood against the
change of variables with the autograd Jacobian, the inverse, and its bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from survae_flowify import models
from survae_flowify.testing import perturb_parameters

SHAPE = (1, 4, 4)


def _tiny(step: str = "autoregressive", levels: int | None = None):
    torch.manual_seed(0)
    flow = models.fconv_maf(SHAPE, squeezes=1, steps=2, step=step, hidden=8, levels=levels).double()
    with torch.no_grad():
        perturb_parameters(flow, scale=0.5, seed=1)
    return flow.eval()


@pytest.mark.parametrize("step", ["autoregressive", "coupling"])
def test_log_prob_is_the_change_of_variables_with_the_autograd_jacobian(step: str) -> None:
    flow = _tiny(step)
    assert flow.exact
    x = 0.8 * torch.randn(3, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    expected = []
    for i in range(len(x)):
        def f(v):
            return flow.transform.forward(v.view(1, *SHAPE))[0].flatten()

        z = f(x[i].flatten())
        log_det = torch.linalg.slogdet(jacobian(f, x[i].flatten()))[1]
        expected.append(-0.5 * (z**2).sum() - 0.5 * z.numel() * math.log(2 * math.pi) + log_det)
    assert torch.allclose(flow.log_prob(x), torch.stack(expected), atol=1e-8)


def test_inverse_recovers_the_input() -> None:
    flow = _tiny()
    x = torch.randn(4, *SHAPE, dtype=torch.float64)
    z, _ = flow.transform.forward(x)
    assert torch.allclose(flow.transform.inverse(z), x, atol=1e-8)


def test_levels_prepend_the_dequantization_and_built_by_name() -> None:
    flow = models.build("fconv-maf", (1, 28, 28))
    assert models.parameter_count(flow) == models.parameter_count(models.fconv_maf((1, 28, 28)))
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert torch.isfinite(flow.log_prob(images)).all()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"shape": (1, 6, 6), "squeezes": 2}, "divisible by 2**squeezes = 4"),
    ({"shape": (28, 28)}, "image shape (C, H, W)"),
    ({"step": "maf"}, "step"),
    ({"steps": 0}, "steps"),
    ({"hidden": -1}, "hidden"),
])
def test_bad_arguments_name_the_builder_and_the_argument(kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match="fconv_maf") as info:
        models.fconv_maf(**kwargs)
    assert message in str(info.value)
