"""Property tests with hypothesis and the public kit in survae_flowify.testing."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import survae_flowify as ffn
from survae_flowify.testing import (
    batches,
    check_bound,
    check_inverse,
    check_log_det,
    check_right_inverse,
    dtypes,
    perturb_parameters,
    seeds,
)
from tests.oracles import linear_gaussian_log_prob

SETTINGS = settings(max_examples=25, deadline=None)
# float32 carries ~7 digits: its tolerances are set by rounding in the layers, not by the checks.
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


@SETTINGS
@given(data=st.data(), dim=st.integers(2, 6), seed=seeds(), dtype=dtypes())
def test_slice_right_inverse(data: st.DataObject, dim: int, seed: int, dtype: torch.dtype) -> None:
    keep = data.draw(st.integers(1, dim - 1))
    kind = data.draw(st.sampled_from(["normal", "diagonal", "conditional"]))
    torch.manual_seed(seed % 1000)
    layer = perturb_parameters(ffn.Slice(dim, keep, inverse_density=kind), seed=seed).to(dtype)
    tol = TOL[dtype]
    check_right_inverse(layer, data.draw(batches((keep,), dtype=dtype)), atol=tol, rtol=tol)


@SETTINGS
@given(data=st.data(), slope=st.floats(0.05, 3.0), dtype=dtypes())
def test_leaky_relu_log_det_and_inverse(data: st.DataObject, slope: float, dtype: torch.dtype) -> None:
    x = data.draw(batches((4,), dtype=dtype))
    layer = ffn.LeakyReLU(slope)
    tol = TOL[dtype]
    check_log_det(layer, x, atol=tol, rtol=tol)
    check_inverse(layer, x, atol=tol, rtol=tol)


@SETTINGS
@given(data=st.data(), copies=st.integers(2, 5), seed=seeds(), dtype=dtypes())
def test_repeat_log_volume_and_left_inverse(data: st.DataObject, copies: int, seed: int,
                                            dtype: torch.dtype) -> None:
    x = data.draw(batches((3,), max_batch=3, dtype=dtype))
    layer = perturb_parameters(ffn.Repeat(3, copies), seed=seed).to(dtype)
    tol = TOL[dtype]
    check_log_det(layer, x, atol=tol, rtol=tol)
    check_inverse(layer, x, atol=tol, rtol=tol)


@SETTINGS
@given(data=st.data(), bins=st.integers(2, 12), seed=seeds(), dtype=dtypes())
def test_spline_log_det_and_inverse(data: st.DataObject, bins: int, seed: int, dtype: torch.dtype) -> None:
    x = data.draw(batches((3,), bound=8.0, dtype=dtype))
    layer = perturb_parameters(ffn.RqSpline(bins, 2.0), scale=1.0, seed=seed).to(dtype)
    # A steep bin amplifies float32 rounding of its knots: ten times the base tolerance.
    tol = 10 * TOL[dtype]
    check_log_det(layer, x, atol=tol, rtol=tol)
    check_inverse(layer, x, atol=tol, rtol=tol)


def _examples(strategy: st.SearchStrategy, n: int) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []

    @settings(max_examples=n, database=None, phases=[Phase.generate], derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(x: torch.Tensor) -> None:
        seen.append(x)

    collect()
    return seen


@pytest.mark.parametrize("shape", [(3,), (2, 3, 3)])
def test_batches_explore(shape: tuple[int, ...]) -> None:
    """The strategy must explore: few exact zeros, examples with many distinct values, rows
    that differ (with hypothesis' default array fill: 40% zeros, 41% of examples with ≤ 2
    distinct values, 18% with every row equal)."""
    seen = _examples(batches(shape), 300)
    values = torch.cat([x.flatten() for x in seen])
    assert (values == 0).double().mean() < 0.10
    assert sum(len(torch.unique(x)) <= 2 for x in seen) / len(seen) < 0.15
    multi = [x for x in seen if x.shape[0] > 1]
    assert sum(bool((x == x[:1]).all()) for x in multi) / len(multi) < 0.05
    assert len({x.shape[0] for x in seen}) == 8  # every batch size from 1 to 8 occurs


def test_dtypes_and_batches_follow_the_dtype() -> None:
    seen = _examples(st.tuples(dtypes(), st.integers(0, 3)), 50)
    assert {dtype for dtype, _ in seen} == {torch.float32, torch.float64}
    for dtype in (torch.float32, torch.float64):
        assert all(x.dtype == dtype for x in _examples(batches((2,), dtype=dtype), 10))


@settings(max_examples=10, deadline=None)
@given(seed=seeds(), extra=st.integers(1, 3), noise=st.sampled_from(["normal", "uniform"]))
def test_augment_elbo_matches_its_closed_form(seed: int, extra: int, noise: str) -> None:
    """Both sides, for both noises: over a standard-normal base the mean ELBO of ``Augment``
    equals ``log N(x) + e·E_q[log N(u; 0, 1) − log q(u)]`` in closed form —
    ``e·(½ + log s − s²/2)`` for ``N(0, s²)`` noise, ``e·(log 2s − ½ log 2π − s²/6)`` for
    ``U(−s, s)`` — which lies below ``log p(x)`` (the closed-form oracle)."""
    torch.manual_seed(seed % 1000)
    t = perturb_parameters(ffn.Augment(2, extra, noise=noise), seed=seed)
    flow = ffn.Flow(ffn.StandardNormal(2 + extra), t).double()
    x = torch.randn(4, 2, dtype=torch.float64)
    exact = linear_gaussian_log_prob(flow, x)
    s = t.noise.log_scale.detach().double().exp().item()
    if noise == "normal":
        per_entry = 0.5 + math.log(s) - s * s / 2
    else:
        per_entry = math.log(2 * s) - 0.5 * math.log(2 * math.pi) - s * s / 6
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(1) + extra * per_entry
    with torch.no_grad():
        draws = torch.stack([flow.log_prob(x) for _ in range(400)])
    stderr = draws.std(0) / 400**0.5
    assert ((draws.mean(0) - expected).abs() < 4 * stderr + 1e-9).all(), (draws.mean(0), expected)
    check_bound(expected, exact, slack=0.0)


def test_checks_catch_a_wrong_log_det() -> None:
    class WrongSign(ffn.Bijection):
        def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return 2 * x, -x.shape[1] * torch.log(x.new_tensor(2.0)).expand(x.shape[0])

        def _inverse(self, z: torch.Tensor, *, mean: bool) -> torch.Tensor:
            return z / 2

    x = torch.randn(3, 2, dtype=torch.float64)
    check_inverse(WrongSign(), x)  # self-consistency alone does not see the sign error
    with pytest.raises(AssertionError, match="autograd"):
        check_log_det(WrongSign(), x)


def test_checks_catch_a_broken_right_inverse() -> None:
    class Broken(ffn.Slice):
        def _inverse(self, z: torch.Tensor, *, mean: bool) -> torch.Tensor:
            return super()._inverse(z, mean=mean) + 0.1

    layer = Broken(4, 2).double()
    with pytest.raises(AssertionError, match="forward\\(inverse"):
        check_right_inverse(layer, torch.randn(3, 2, dtype=torch.float64))


def test_check_bound_raises() -> None:
    with pytest.raises(AssertionError, match="exceeds"):
        check_bound(torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.5]))
