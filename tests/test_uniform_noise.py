"""Uniform-noise likelihoods against the importance-weighted limit on the noise support.

With uniform noise ``u ~ U(S)`` a generative surjection's IW bound converges, as ``K → ∞``, to
``log ∫_S p(x, u) du`` — the likelihood restricted to the support — and its single-sample ELBO
has the expectation ``E_{U(S)}[log p(x, u)] + log |S|``. Each test writes the joint ``p(x, u)``
from the layer's documented forward map (or finds that map by autograd over the uniform draws,
:func:`tests.oracles.uniform_draw_map`), integrates it over ``S`` by quadrature, and compares
``Flow.log_prob(x, num_samples=K)`` (large K) and the mean of many ELBO draws with both numbers,
from both sides. Parameters are moved off their initial values first; the restriction to the
support is checked to be visible (``limit < log p(x)`` by a margin), so a layer whose noise were
ignored, or whose ``log q`` had the wrong sign or volume, fails.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

import survae_flowify as ffn
from survae_flowify.layers.conv import Conv2d, PatchLinear
from survae_flowify.testing import perturb_parameters
from tests.oracles import (
    box_quadrature,
    disk_quadrature,
    orthonormal_complement_of_diagonal,
    support_limits,
    uniform_draw_map,
)

K_IW = 40_000
K_ELBO = 20_000


def _estimates(flow: ffn.Flow, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """IW bound (K_IW draws), mean ELBO and its standard error (K_ELBO draws), all ``(B,)``."""
    torch.manual_seed(123)
    with torch.no_grad():
        iw = flow.log_prob(x, num_samples=K_IW, chunk_size=K_IW)
        b = x.shape[0]
        draws = flow.log_prob(x.repeat(K_ELBO, *[1] * (x.dim() - 1))).view(K_ELBO, b)
    return iw, draws.mean(0), draws.std(0) / math.sqrt(K_ELBO)


def _compare(flow: ffn.Flow, x: torch.Tensor, limit: torch.Tensor, elbo: torch.Tensor,
             exact: torch.Tensor) -> None:
    assert (exact - limit > 0.1).all(), (exact, limit)  # the restriction to S is visible
    assert (limit > elbo).all(), (limit, elbo)
    iw, elbo_mean, stderr = _estimates(flow, x)
    # Weights on a bounded support have finite variance: with K = 40 000 the IW estimate is
    # within a few thousandths of its limit (measured: at most 0.003 nats here).
    torch.testing.assert_close(iw, limit, atol=0.008, rtol=0)
    assert ((elbo_mean - elbo).abs() < 4 * stderr + 1e-3).all(), (elbo_mean, elbo, stderr)


def _diagonal_base(shape: int, seed: int) -> ffn.DiagonalNormal:
    return perturb_parameters(ffn.DiagonalNormal(shape), scale=0.4, seed=seed).double()


@pytest.mark.parametrize("extra", [1, 2])
def test_augment(extra: int) -> None:
    """``z = (x, u)``, ``u ~ U(−s, s)^e``, base ``N(μ, diag σ²)``: ``p(x, u)`` is the base density
    at ``(x, u)``; the support is the box ``[−s, s]^e``."""
    torch.manual_seed(0)
    layer = ffn.Augment(2, extra, noise="uniform", init_scale=0.8)
    layer = perturb_parameters(layer, scale=0.5, seed=1).double()
    base = _diagonal_base(2 + extra, seed=2)
    flow = ffn.Flow(base, layer)
    x = torch.randn(3, 2, dtype=torch.float64)
    s = layer.noise.log_scale.detach().exp()
    normal = Normal(base.loc.detach(), base.log_scale.detach().exp())
    nodes, weights = box_quadrature(-s.expand(extra), s.expand(extra))
    joint = torch.cat([x[:, None, :].expand(-1, nodes.shape[0], -1),
                       nodes[None].expand(3, -1, -1)], -1)
    limit, elbo = support_limits(normal.log_prob(joint).sum(-1), weights)
    exact = Normal(normal.loc[:2], normal.scale[:2]).log_prob(x).sum(-1)
    _compare(flow, x, limit, elbo, exact)


@pytest.mark.parametrize(("features", "copies"), [(2, 2), (1, 3)])
def test_repeat(features: int, copies: int) -> None:
    """``z_k = x + (B w)_k`` (copy-major along dimension 1), ``B`` an orthonormal basis of the
    complement of the diagonal, ``w`` uniform on the ``(N−1)``-ball of radius ``s`` per entry;
    the map ``(x, w) ↦ z`` has ``|det| = √N`` per entry. Base ``N(μ, diag σ²)``, so the entries
    are independent and each contributes a one- or two-dimensional integral."""
    torch.manual_seed(0)
    layer = perturb_parameters(ffn.Repeat(features, copies, noise="uniform"), scale=0.5,
                               seed=3).double()
    base = _diagonal_base(features * copies, seed=4)
    flow = ffn.Flow(base, layer)
    x = torch.randn(3, features, dtype=torch.float64)
    s = layer.log_scale.detach().exp().item()
    loc = base.loc.detach().view(copies, features)
    scale = base.log_scale.detach().exp().view(copies, features)
    basis = orthonormal_complement_of_diagonal(copies)
    if copies == 2:
        nodes, weights = box_quadrature(torch.tensor([-s]), torch.tensor([s]))
    else:
        nodes, weights = disk_quadrature(s)
    offsets = nodes @ basis.T  # (P, N): the noise on the N copies
    limit = torch.zeros(3, dtype=torch.float64)
    elbo = torch.zeros(3, dtype=torch.float64)
    exact = torch.zeros(3, dtype=torch.float64)
    for d in range(features):
        z = x[:, d, None, None] + offsets[None]  # (B, P, N)
        log_joint = Normal(loc[:, d], scale[:, d]).log_prob(z).sum(-1) + 0.5 * math.log(copies)
        lim, el = support_limits(log_joint, weights)
        limit, elbo = limit + lim, elbo + el
        # p(x_d) = √N ∫ N(x_d·1 + Bw; μ, Σ) dw: in the orthonormal coordinates (t, w) with
        # t = 1ᵀz/√N = √N x_d, the integral is the marginal density of t, N(1ᵀμ/√N, 1ᵀΣ1/N).
        t = Normal(loc[:, d].sum() / math.sqrt(copies), scale[:, d].square().sum().sqrt() / math.sqrt(copies))
        exact = exact + t.log_prob(math.sqrt(copies) * x[:, d]) + 0.5 * math.log(copies)
    _compare(flow, x, limit, elbo, exact)


def _affine_joint(transform: ffn.Transform, in_shape: tuple[int, ...], x: torch.Tensor,
                  nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard-normal base, ``z = c + A x + R r`` with ``r`` the uniform draws: the joint
    ``log p(x, r) = log N(z; 0, I) + log|det [A R]|`` at every node ``r`` (``(B, P)``), and the
    exact ``log p(x)`` (the marginal of that Gaussian joint, ``(B,)``)."""
    c, a, r = uniform_draw_map(transform, in_shape)
    m = torch.cat([a, r], 1)
    assert m.shape[0] == m.shape[1], m.shape  # the layer with its noise is a bijection
    log_det = torch.linalg.slogdet(m)[1]
    xf = x.flatten(1)
    z = c + xf[:, None, :] @ a.T + (nodes @ r.T)[None]  # (B, P, D_z)
    log_joint = Normal(0.0, 1.0).log_prob(z).sum(-1) + log_det
    # (x, r) = M⁻¹(z − c) with z ~ N(0, I): Gaussian with mean −M⁻¹c, covariance M⁻¹M⁻ᵀ.
    m_inv = torch.linalg.inv(m)
    d = xf.shape[1]
    joint = MultivariateNormal(-(m_inv @ c)[:d], covariance_matrix=(m_inv @ m_inv.T)[:d, :d])
    return log_joint, joint.log_prob(xf)


@pytest.mark.parametrize(
    ("make", "in_shape"),
    [
        (lambda: ffn.Linear(2, 3, noise="uniform"), (2,)),
        (lambda: ffn.Linear(2, 4, noise="uniform", rotation="cayley"), (2,)),
        (lambda: PatchLinear(1, 2, noise="uniform"), (1, 1, 2)),
        (lambda: Conv2d(1, 5, 2, 2, noise="uniform", image_size=2), (1, 2, 2)),
    ],
    ids=["linear_2_3", "linear_2_4", "patch_linear_1_2", "conv2d_uniform_kernel"],
)
def test_increasing_linear_pieces(make, in_shape: tuple[int, ...]) -> None:
    """The increasing Linear, PatchLinear and a Conv2d whose only noise is its kernel's: over a
    standard-normal base the forward is affine in the input and the uniform draws ``r ∈ [0,1)^e``
    (``q(r) = 1``), so the IW limit is ``log ∫_{[0,1]^e} p(x, r) dr``."""
    torch.manual_seed(0)
    layer = perturb_parameters(make(), scale=0.4, seed=5).double()
    x = torch.randn(3, *in_shape, dtype=torch.float64)
    flow = ffn.Flow(ffn.StandardNormal(*layer(x)[0].shape[1:]), layer)
    e = uniform_draw_map(layer, in_shape)[2].shape[1]  # the number of uniform draws
    nodes, weights = box_quadrature(torch.zeros(e), torch.ones(e))
    log_joint, exact = _affine_joint(layer, in_shape, x, nodes)
    limit, elbo = support_limits(log_joint, weights)
    _compare(flow, x, limit, elbo, exact)


def test_augmentation_gap_against_the_support_limits() -> None:
    """``Flow.augmentation_gap`` with uniform noise: its IW bound approaches the restricted
    likelihood, its ELBO the expected ELBO, and the gap their difference (not the full gap
    ``log p(x) − E[ELBO]``, which the report says it underestimates)."""
    torch.manual_seed(0)
    layer = perturb_parameters(ffn.Augment(1, 1, noise="uniform"), scale=0.5, seed=7).double()
    base = _diagonal_base(2, seed=8)
    flow = ffn.Flow(base, layer)
    x = torch.tensor([[-1.2], [0.1], [1.7]], dtype=torch.float64)
    s = layer.noise.log_scale.detach().exp()
    normal = Normal(base.loc.detach(), base.log_scale.detach().exp())
    nodes, weights = box_quadrature(-s[None], s[None])
    joint = torch.cat([x[:, None, :].expand(-1, nodes.shape[0], -1), nodes[None].expand(3, -1, -1)], -1)
    limit, elbo = support_limits(normal.log_prob(joint).sum(-1), weights)
    exact = Normal(normal.loc[0], normal.scale[0]).log_prob(x[:, 0])
    torch.manual_seed(9)
    with torch.no_grad():
        report = flow.augmentation_gap(x, num_samples=K_IW, chunk_size=K_IW)
    torch.testing.assert_close(report.iw_bound, limit, atol=0.008, rtol=0)
    torch.testing.assert_close(report.elbo, elbo, atol=0.02, rtol=0)
    torch.testing.assert_close(report.gap, limit - elbo, atol=0.03, rtol=0)
    assert ((exact - elbo) - report.gap > 0.1).all()  # the full gap is larger: bounded support
    assert report.bounded_support and "bounded support" in str(report)
