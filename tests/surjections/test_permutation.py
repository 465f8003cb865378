"""StochasticPermutation: a permutation-invariant density is unchanged (closed form); for any
other the layer is a bound whose importance-weighted estimate reaches the symmetrised density."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import survae_flowify as ffn
from survae_flowify.surjections import StochasticPermutation


def _diagonal(loc: list[float], log_scale: list[float]) -> ffn.DiagonalNormal:
    base = ffn.DiagonalNormal(len(loc)).double()
    with torch.no_grad():
        base.loc.copy_(torch.tensor(loc, dtype=torch.float64))
        base.log_scale.copy_(torch.tensor(log_scale, dtype=torch.float64))
    return base


def test_kind_is_a_bound_with_both_directions_stochastic() -> None:
    layer = StochasticPermutation()
    assert not layer.exact and layer.stochastic_forward and layer.stochastic_inverse
    flow = ffn.Flow(ffn.StandardNormal(3), ffn.Sequential(ffn.Reverse(), layer))
    assert not flow.exact
    with pytest.raises(ValueError, match="StochasticPermutation gives a lower bound"):
        flow.sample_and_log_prob(2)


def test_permutation_invariant_density_is_unchanged() -> None:
    """An isotropic normal ``N(m·1, s² I)``: every permutation gives the same value, so the layer's
    estimate equals the closed form on every draw."""
    torch.manual_seed(0)
    flow = ffn.Flow(_diagonal([0.7] * 4, [-0.3] * 4), StochasticPermutation())
    x = 2 * torch.randn(50, 4, dtype=torch.float64)
    loc, scale = torch.tensor(0.7, dtype=torch.float64), torch.tensor(-0.3, dtype=torch.float64).exp()
    exact = torch.distributions.Normal(loc, scale).log_prob(x).sum(1)
    for _ in range(3):
        torch.testing.assert_close(flow.log_prob(x), exact, atol=1e-12, rtol=0)


def _symmetrised(base: ffn.DiagonalNormal, x: torch.Tensor) -> torch.Tensor:
    """``log (1/D!) Σ_π p(π x)`` by enumerating the permutations (closed form per term)."""
    normal = torch.distributions.Normal(base.loc.detach(), base.log_scale.detach().exp())
    terms = [normal.log_prob(x[:, list(p)]).sum(1) for p in itertools.permutations(range(x.shape[1]))]
    return torch.logsumexp(torch.stack(terms), 0) - math.log(len(terms))


def test_non_invariant_density_gives_a_bound_that_iw_tightens() -> None:
    torch.manual_seed(1)
    base = _diagonal([-1.0, 0.5, 2.0], [0.2, -0.4, 0.0])
    flow = ffn.Flow(base, StochasticPermutation())
    x = torch.randn(6, 3, dtype=torch.float64) + 0.5
    exact = _symmetrised(base, x)
    with torch.no_grad():
        elbo = torch.stack([flow.log_prob(x) for _ in range(3000)]).mean(0)
        iw = flow.log_prob(x, num_samples=60_000, chunk_size=60_000)
    assert (elbo < exact - 0.05).all()  # a real gap, so the bound is not exact here
    # K draws of 6 orders: each order's share is off by ~√(5/36/K) ≈ 0.15 %, a few × 0.01 nats at most
    torch.testing.assert_close(iw, exact, atol=0.02, rtol=0)
    assert (exact - elbo).min() > 5 * (exact - iw).abs().max()


def test_samples_follow_the_symmetrised_density() -> None:
    """Every coordinate of a sample has the mixture of the base's marginals (mean: the average
    loc); ``mean=True`` keeps the base's order."""
    torch.manual_seed(2)
    flow = ffn.Flow(_diagonal([-1.0, 0.5, 2.0], [0.0, 0.0, 0.0]), StochasticPermutation())
    with torch.no_grad():
        x = flow.sample(30_000)
        fixed = flow.sample(30_000, mean=True)  # the base is still sampled, but not permuted
    torch.testing.assert_close(x.mean(0), torch.full((3,), 0.5, dtype=torch.float64), atol=0.03, rtol=0)
    torch.testing.assert_close(fixed.mean(0), torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64),
                               atol=0.03, rtol=0)
    layer = StochasticPermutation()
    z = torch.arange(12.0).view(3, 4)
    assert torch.equal(layer.inverse(z, mean=True), z)
    assert torch.equal(layer(z)[0].sort(1).values, z)  # a permutation of each row


def test_bad_input_names_the_layer() -> None:
    with pytest.raises(ValueError, match=r"StochasticPermutation: expected x of shape \(batch, D\)"):
        StochasticPermutation()(torch.randn(2, 3, 4))
