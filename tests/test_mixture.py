"""``MixtureOfGaussians``: against torch.distributions, normalisation on a grid, sample moments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as td

import survae_flowify as ffn
from survae_flowify.distributions.mixture import MixtureOfGaussians
from survae_flowify.testing import perturb_parameters


def _mixture(features: int, components: int, seed: int = 1) -> MixtureOfGaussians:
    torch.manual_seed(0)
    return perturb_parameters(MixtureOfGaussians(features, components).double(), scale=0.8, seed=seed)


def _reference(m: MixtureOfGaussians) -> td.MixtureSameFamily:
    """The same mixture, built by torch.distributions from the parameters alone."""
    with torch.no_grad():
        components = td.Independent(td.Normal(m.means.clone(), m.log_scales.exp()), 1)
        return td.MixtureSameFamily(td.Categorical(logits=m.logits.clone()), components)


@pytest.mark.parametrize(("features", "components"), [(1, 1), (3, 4), (5, 2)])
def test_log_prob_matches_mixture_same_family(features: int, components: int) -> None:
    m = _mixture(features, components)
    z = 2.0 * torch.randn(9, features, dtype=torch.float64)
    torch.testing.assert_close(m.log_prob(z).detach(), _reference(m).log_prob(z), atol=1e-12, rtol=0)
    assert m.log_prob(z[:0]).shape == (0,)


def test_integrates_to_one_on_a_grid() -> None:
    m = _mixture(2, 3, seed=4)
    lo, hi, n = -25.0, 25.0, 1001  # |μ| < 3, σ < 3 here: > 7σ
    axis = torch.linspace(lo, hi, n, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = m.log_prob(grid).exp().view(n, n)
    mass = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis)
    assert abs(mass.item() - 1.0) < 1e-4


def test_sample_moments_match_the_mixture() -> None:
    m = _mixture(2, 3, seed=7)
    torch.manual_seed(3)
    with torch.no_grad():
        x = m.sample(200_000)
        pi = m.logits.softmax(0)
        var = m.log_scales.exp().square()
    mean = pi @ m.means.detach()
    # Law of total variance, per coordinate: Σ_k π_k (σ_k² + μ_k²) − mean².
    second = pi @ (var + m.means.detach().square())
    assert x.shape == (200_000, 2) and x.dtype == torch.float64
    se = (second - mean.square()).sqrt() / math.sqrt(len(x))
    assert ((x.mean(0) - mean).abs() < 5 * se).all(), (x.mean(0), mean)
    torch.testing.assert_close(x.var(0), second - mean.square(), atol=0, rtol=0.02)


def test_mean_sample_is_the_mixture_mean() -> None:
    m = _mixture(3, 2)
    out = m.sample(4, mean=True)
    want = m.logits.softmax(0) @ m.means
    torch.testing.assert_close(out, want.expand(4, 3), atol=1e-12, rtol=0)


def test_as_the_base_of_a_flow() -> None:
    """Every parameter learns through ``Flow.log_prob``; sampling returns the event shape."""
    torch.manual_seed(0)
    flow = ffn.Flow(MixtureOfGaussians(2, 3), ffn.LeakyReLU(0.5)).double()
    x = torch.randn(16, 2, dtype=torch.float64)
    flow.log_prob(x).mean().backward()
    for name, p in flow.base.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    with torch.no_grad():
        assert flow.sample(5).shape == (5, 2)


def test_components_start_apart() -> None:
    torch.manual_seed(0)
    m = MixtureOfGaussians(4, 5)
    gaps = torch.pdist(m.means.detach())
    assert gaps.min() > 0.5


def test_bad_arguments_and_inputs_name_the_distribution() -> None:
    with pytest.raises(ValueError, match="MixtureOfGaussians: features must be a positive int"):
        MixtureOfGaussians(0, 2)
    with pytest.raises(ValueError, match="MixtureOfGaussians: num_components must be a positive int"):
        MixtureOfGaussians(2, 1.5)  # type: ignore[arg-type]
    m = MixtureOfGaussians(2, 3)
    with pytest.raises(ValueError, match=r"MixtureOfGaussians\(features=2, num_components=3\): "
                                         r"expected z of shape \(batch, 2\)"):
        m.log_prob(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"MixtureOfGaussians.*NaN"):
        m.log_prob(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match=r"MixtureOfGaussians\.sample: n must be a positive int"):
        m.sample(0)
    with pytest.raises(TypeError, match=r"MixtureOfGaussians\.sample: mean must be True or False"):
        m.sample(2, mean=1)  # type: ignore[arg-type]
