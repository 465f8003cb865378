"""The shared battery: every public transform (tests/cases) through the same checks."""

from __future__ import annotations

import io
import re

import pytest
import torch

import survae_flowify as ffn
from survae_flowify.testing import (
    check_inverse,
    check_log_det,
    check_right_inverse,
    perturb_parameters,
)
from tests.cases import ALL
from tests.oracles import linear_gaussian_log_prob

NAMES = sorted(ALL)
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 2e-4, torch.float64: 1e-9}


def build(name: str, dtype: torch.dtype = torch.float64) -> ffn.Transform:
    torch.manual_seed(0)
    t = ALL[name].make().to(dtype)
    return perturb_parameters(t, scale=0.3, seed=1)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtype(name: str, dtype: torch.dtype) -> None:
    t = build(name, dtype)
    x = ALL[name].input(5, dtype)
    z, contribution = t(x)
    assert contribution.shape == (5,)
    assert contribution.dtype == dtype and z.dtype == dtype
    assert torch.isfinite(contribution).all() and torch.isfinite(z).all()
    if t.out_shape is not None:
        assert all(e is None or e == g for e, g in zip(t.out_shape, z.shape[1:], strict=True))
    x_back = t.inverse(z)
    assert x_back.shape == x.shape and x_back.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_inverse_conditions(name: str, dtype: torch.dtype) -> None:
    t = build(name, dtype)
    x = ALL[name].input(6, dtype)
    tol = 10 * TOL[dtype]
    if not t.stochastic_inverse:
        check_inverse(t, x, atol=tol, rtol=tol)
    if not t.stochastic_forward:
        z, _ = t(x)
        check_right_inverse(t, z, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", [n for n in NAMES if ALL[n].log_det])
def test_contribution_matches_autograd_jacobian(name: str) -> None:
    t = build(name)
    check_log_det(t, ALL[name].input(4, torch.float64), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", [n for n in NAMES if ALL[n].gradcheck])
def test_gradcheck(name: str) -> None:
    t = build(name)
    x = ALL[name].input(2, torch.float64).requires_grad_()

    def f(inp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(3)  # the same noise on every evaluation
        return t(inp)

    assert torch.autograd.gradcheck(f, (x,), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_names_the_layer(name: str) -> None:
    t = build(name)
    x = ALL[name].input(3, torch.float64)
    entry = t
    while isinstance(entry, ffn.Sequential):
        entry = entry[0]
    label = re.escape(type(entry).__name__)
    bad = x.clone()
    bad.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=label + r".*NaN"):
        t(bad)
    if t.in_shape is not None:
        with pytest.raises(ValueError, match=label + r".*expected x of shape"):
            t(torch.randn(3, *[s + 1 for s in x.shape[1:]], dtype=torch.float64))
        with pytest.raises(ValueError, match=label + r".*expected x of shape"):
            t(x[0])


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name: str) -> None:
    t = build(name)
    buffer = io.BytesIO()
    torch.save(t, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = ALL[name].input(4, torch.float64)
    torch.manual_seed(7)
    z1, c1 = t(x)
    torch.manual_seed(7)
    z2, c2 = loaded(x)
    assert torch.equal(z1, z2) and torch.equal(c1, c2)


@pytest.mark.parametrize("name", [n for n in NAMES if ALL[n].linear_gaussian])
def test_linear_gaussian_closed_form(name: str) -> None:
    t = build(name)
    flow = ffn.Flow(ffn.StandardNormal(*t.out_shape), t).double()
    torch.manual_seed(11)
    with torch.no_grad():
        x = flow.sample(5)
    exact = linear_gaussian_log_prob(flow, x)
    with torch.no_grad():
        if flow.exact:
            torch.testing.assert_close(flow.log_prob(x), exact, atol=1e-8, rtol=0)
        else:
            elbo = torch.stack([flow.log_prob(x) for _ in range(200)]).mean(0)
            assert (elbo < exact).all(), (elbo, exact)
            iw = flow.log_prob(x, num_samples=100_000, chunk_size=20_000)
            # The IW estimate fluctuates around its (lower) expectation by a few thousandths of a nat.
            assert (iw <= exact + 0.03).all() and (exact - iw).max() < 0.05, (iw, exact)
