"""The Gram layer's basis-free conditional density on the null space of ``W`` (DESIGN.md §13)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import survae_flowify as ffn
from survae_flowify.distributions.nullspace import NullSpaceNormal
from survae_flowify.layers.gram_linear import GramReducingLinear
from survae_flowify.testing import perturb_parameters
from tests.oracles import linear_gaussian_log_prob


def _layer(fin: int = 7, fout: int = 3, **kwargs: object) -> GramReducingLinear:
    torch.manual_seed(0)
    layer = ffn.Linear(fin, fout, parametrization="gram", inverse_density="conditional", **kwargs)
    return perturb_parameters(layer, scale=0.5, seed=3).double()


def _explicit_basis_log_prob(layer: GramReducingLinear, x: torch.Tensor,
                             context: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ log s_i + log N(V⊥ᵀ x; V⊥ᵀ μ, σ² I)`` in an explicit null-space basis ``V⊥`` from a
    full SVD of ``W``: no projector identity, no QR, torch's own multivariate normal."""
    w = layer.weight.detach()
    _, s, vh = torch.linalg.svd(w, full_matrices=True)
    null = vh[w.shape[0]:].T  # (n, m): orthonormal basis of the null space
    z = x @ w.T + layer.bias.detach()
    loc, log_scale = layer.null_density.params(z, context)
    out = []
    for i in range(x.shape[0]):
        cov = torch.exp(2 * log_scale[i]) * torch.eye(null.shape[1], dtype=x.dtype)
        mvn = torch.distributions.MultivariateNormal(null.T @ loc[i], covariance_matrix=cov)
        out.append(mvn.log_prob(null.T @ x[i]))
    return torch.log(s).sum() + torch.stack(out).detach()


@pytest.mark.parametrize("context_features", [None, 2])
def test_contribution_equals_the_density_in_an_explicit_null_basis(context_features: int | None) -> None:
    layer = _layer(context_features=context_features)
    x = torch.randn(6, 7, dtype=torch.float64)
    context = None if context_features is None else torch.randn(6, 2, dtype=torch.float64)
    _, contribution = layer(x, context)
    torch.testing.assert_close(contribution.detach(), _explicit_basis_log_prob(layer, x, context),
                               rtol=1e-10, atol=1e-10)


def test_linear_mean_network_matches_the_linear_gaussian_closed_form() -> None:
    """With the density's network replaced by an affine map (a constant scale), the flow
    ``StandardNormal(3) → layer⁻¹`` is linear-Gaussian: ``log p(x)`` has a closed form."""
    layer = _layer()
    torch.manual_seed(5)
    affine = nn.Linear(3, 8).double()
    with torch.no_grad():
        affine.weight[-1].zero_()  # log σ does not depend on z
        affine.bias[-1] = 0.7
    layer.null_density.net = affine
    flow = ffn.Flow(ffn.StandardNormal(3), layer).double()
    x = 1.5 * torch.randn(5, 7, dtype=torch.float64)
    torch.testing.assert_close(flow.log_prob(x).detach(), linear_gaussian_log_prob(flow, x),
                               rtol=1e-9, atol=1e-9)


def test_starts_as_the_standard_normal_layer() -> None:
    torch.manual_seed(1)
    conditional = ffn.Linear(6, 2, parametrization="gram", inverse_density="conditional")
    normal = ffn.Linear(6, 2, parametrization="gram")
    normal.load_state_dict(conditional.state_dict(), strict=False)
    x = torch.randn(4, 6)
    torch.testing.assert_close(conditional(x)[1], normal(x)[1])


def test_right_inverse_and_mean_lie_on_the_fibre() -> None:
    layer = _layer(context_features=2)
    z = torch.randn(9, 3, dtype=torch.float64)
    context = torch.randn(9, 2, dtype=torch.float64)
    for mean in (False, True):
        x = layer.inverse(z, context, mean=mean)
        torch.testing.assert_close(layer(x, context)[0], z)
    # the mean is W⁺(z − b) + P⊥ μ: its null-space part is the projected predicted mean
    x_mean = layer.inverse(z, context, mean=True)
    loc, _ = layer.null_density.params(z, context)
    q = torch.linalg.qr(layer.weight.detach().T)[0]
    proj = torch.eye(7, dtype=torch.float64) - q @ q.T
    torch.testing.assert_close(x_mean @ proj, (loc @ proj).detach())


def test_samples_have_the_predicted_spread() -> None:
    layer = _layer()
    z = torch.randn(1, 3, dtype=torch.float64).expand(20000, 3)
    torch.manual_seed(2)
    x = layer.inverse(z, mean=False)
    _, log_scale = layer.null_density.params(z[:1])
    q = torch.linalg.qr(layer.weight.detach().T)[0]
    resid = x - x.mean(0)
    spread = (resid.square().sum(1) - (resid @ q).square().sum(1)).mean() / 4  # m = 7 − 3
    assert math.isclose(float(spread), float(torch.exp(2 * log_scale.detach())), rel_tol=0.05)


def test_context_is_required_and_checked() -> None:
    layer = _layer(context_features=2)
    with pytest.raises(ValueError, match="context"):
        layer(torch.randn(4, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="context"):
        layer(torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64))


def test_density_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="NullSpaceNormal: kept_features"):
        NullSpaceNormal(4, 4)
    with pytest.raises(ValueError, match="NullSpaceNormal: hidden"):
        NullSpaceNormal(4, 2, hidden=2.5)
    with pytest.raises(ValueError, match="context_features"):
        ffn.Linear(4, 2, parametrization="gram", context_features=3)  # needs 'conditional'


def test_paper_fmlp_builds_with_the_gram_parametrization() -> None:
    from survae_flowify import models

    flow = models.build("fmlp", (1, 28, 28), parametrization="gram")
    reducing = [m for m in flow.modules() if isinstance(m, GramReducingLinear)]
    assert reducing and all(m.null_density is not None for m in reducing)
    x = torch.randint(0, 256, (3, 1, 28, 28)).float()
    assert torch.isfinite(flow.log_prob(x)).all()
