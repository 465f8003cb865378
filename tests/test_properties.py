"""Property tests with hypothesis and the public kit in survae_flowify.testing."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import survae_flowify as ffn
from survae_flowify.testing import (
    batches,
    check_bound,
    check_inverse,
    check_log_det,
    check_right_inverse,
    perturb_parameters,
    seeds,
)
from tests.oracles import linear_gaussian_log_prob

SETTINGS = settings(max_examples=25, deadline=None)


@SETTINGS
@given(data=st.data(), dim=st.integers(2, 6), seed=seeds())
def test_slice_right_inverse(data: st.DataObject, dim: int, seed: int) -> None:
    keep = data.draw(st.integers(1, dim - 1))
    kind = data.draw(st.sampled_from(["normal", "diagonal", "conditional"]))
    torch.manual_seed(seed % 1000)
    layer = perturb_parameters(ffn.Slice(dim, keep, inverse_density=kind), seed=seed).double()
    check_right_inverse(layer, data.draw(batches((keep,))), atol=1e-10, rtol=1e-10)


@SETTINGS
@given(x=batches((4,)), slope=st.floats(0.05, 3.0))
def test_leaky_relu_log_det_and_inverse(x: torch.Tensor, slope: float) -> None:
    layer = ffn.LeakyReLU(slope)
    check_log_det(layer, x, atol=1e-9, rtol=1e-9)
    check_inverse(layer, x, atol=1e-10, rtol=1e-10)


@SETTINGS
@given(x=batches((3,), max_batch=3), copies=st.integers(2, 5), seed=seeds())
def test_repeat_log_volume_and_left_inverse(x: torch.Tensor, copies: int, seed: int) -> None:
    layer = perturb_parameters(ffn.Repeat(3, copies), seed=seed).double()
    check_log_det(layer, x, atol=1e-9, rtol=1e-9)
    check_inverse(layer, x, atol=1e-10, rtol=1e-10)


@SETTINGS
@given(x=batches((3,), bound=8.0), bins=st.integers(2, 12), seed=seeds())
def test_spline_log_det_and_inverse(x: torch.Tensor, bins: int, seed: int) -> None:
    layer = perturb_parameters(ffn.RqSpline(bins, 2.0), scale=1.0, seed=seed).double()
    check_log_det(layer, x, atol=1e-8, rtol=1e-8)
    check_inverse(layer, x, atol=1e-8, rtol=1e-8)


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
