"""Augment with a learned conditional noise density q(u | x) (the CIF recipe), against the
closed form of a linear-Gaussian model: Augment then a square flowified Linear over N(0, I)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

import survae_flowify as ffn
from survae_flowify.testing import perturb_parameters

F64 = torch.float64
D, E = 2, 1  # data entries, augmented entries (E = 1: the exact posterior is a 1-D normal)


def _model(noise: object) -> ffn.Flow:
    torch.manual_seed(0)
    linear = perturb_parameters(ffn.Linear(D + E, D + E), scale=0.8, seed=1)
    augment = ffn.Augment(D, E, noise=noise)
    return ffn.Flow(ffn.StandardNormal(D + E), ffn.Sequential(augment, linear)).double()


def _joint(flow: ffn.Flow) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of y = (x, u) when z = W y + b ~ N(0, I): ``−W⁻¹b`` and ``(WᵀW)⁻¹``."""
    linear = flow.transform[1]
    w, b = linear.weight.detach(), linear.bias.detach()
    return -torch.linalg.solve(w, b), torch.linalg.inv(w.T @ w)


def _closed_form(flow: ffn.Flow, x: torch.Tensor) -> tuple[torch.Tensor, Normal]:
    """``log p(x)`` and the exact posterior ``p(u | x)`` (a normal, since E = 1)."""
    m, s = _joint(flow)
    sxx, sux, suu = s[:D, :D], s[D:, :D], s[D:, D:]
    log_p = MultivariateNormal(m[:D], sxx).log_prob(x)
    gain = sux @ torch.linalg.inv(sxx)
    loc = m[D:] + (x - m[:D]) @ gain.T
    var = suu - gain @ sux.T
    return log_p, Normal(loc[:, 0], var[0, 0].sqrt())


def _q(flow: ffn.Flow, x: torch.Tensor) -> Normal:
    loc, log_scale = flow.transform[0].noise.params(x)
    return Normal(loc[:, 0].detach(), log_scale[:, 0].exp().detach())


def _conditional_noise() -> ffn.ConditionalNormal:
    return perturb_parameters(ffn.ConditionalNormal(E, D, hidden=16), scale=0.5, seed=2)


def test_elbo_equals_the_closed_form_and_iw_approaches_the_marginal() -> None:
    """Mean ELBO = log p(x) − KL(q(u | x) ‖ p(u | x)), both from the closed form; the IW bound
    approaches log p(x) from below."""
    flow = _model(_conditional_noise())
    torch.manual_seed(3)
    with torch.no_grad():
        x = flow.sample(4)
        log_p, posterior = _closed_form(flow, x)
        expected = log_p - kl_divergence(_q(flow, x), posterior)
        draws = torch.stack([flow.log_prob(x) for _ in range(4000)])
        iw = torch.stack([flow.log_prob(x, num_samples=20_000, chunk_size=20_000)
                          for _ in range(3)]).median(0).values
    standard_error = draws.std(0) / len(draws) ** 0.5
    assert ((draws.mean(0) - expected).abs() < 4 * standard_error + 1e-6).all(), (draws.mean(0), expected)
    assert (expected < log_p - 1e-3).all()  # perturbed q: a real gap to close
    assert (iw <= log_p + 0.01).all() and (log_p - iw).max() < 0.03, (iw, log_p)


def test_a_learned_q_shrinks_the_gap_below_the_fixed_noise_one() -> None:
    """Training q(u | x) alone on the ELBO drives KL(q ‖ p(u | x)) (closed form) far below where
    it started, and below the gap of fixed N(0, s²) noise with the same model."""
    flow = _model(_conditional_noise())
    torch.manual_seed(4)
    with torch.no_grad():
        x = flow.sample(256)
    _, posterior = _closed_form(flow, x)
    before = kl_divergence(_q(flow, x), posterior).mean()
    fixed = _model("normal")
    assert torch.equal(fixed.transform[1].weight, flow.transform[1].weight)
    scale = fixed.transform[0].noise.log_scale.exp().detach().to(F64)
    fixed_gap = kl_divergence(Normal(torch.zeros(()), scale), posterior).mean()
    optimizer = torch.optim.Adam(flow.transform[0].parameters(), lr=1e-2)
    for _ in range(300):
        loss = -flow.log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = kl_divergence(_q(flow, x), posterior).mean()
    assert after < 0.1 * before and after < 0.1 * fixed_gap, (before, after, fixed_gap)
    with torch.no_grad():
        gap = flow.augmentation_gap(x, num_samples=64).gap.mean()
    assert gap < 0.1 * before, (gap, before)


def test_flow_noise_contribution_is_minus_its_log_density() -> None:
    """With a conditional Flow as q, V = −log q(u | x) for the u that was appended (the flow's
    own forward density of that u, another path than the sampling pass)."""
    q = ffn.Flow(ffn.ConditionalNormal(2, 3, hidden=8),
                 ffn.Sequential(ffn.RqCoupling(2, hidden=8, num_bins=4, context_features=3), ffn.Reverse()))
    layer = perturb_parameters(ffn.Augment(3, 2, noise=q).double(), scale=0.5, seed=3)
    x = torch.randn(5, 3, dtype=F64)
    with torch.no_grad():
        z, contribution = layer(x)
        torch.testing.assert_close(z[:, :3], x)
        torch.testing.assert_close(contribution, -q.log_prob(z[:, 3:], x), atol=1e-10, rtol=1e-10)
        assert not torch.equal(q.log_prob(z[:, 3:], x), q.log_prob(z[:, 3:], x + 1))  # it sees x


def test_noise_off_appends_zeros() -> None:
    layer = ffn.Augment(3, 2, noise=ffn.ConditionalNormal(2, 3))
    x = torch.randn(4, 3)
    with ffn.noise_off():
        z, contribution = layer(x)
    assert torch.equal(z, torch.cat([x, torch.zeros(4, 2)], 1)) and torch.equal(contribution, torch.zeros(4))


def test_the_noise_context_does_not_leak_into_the_flow() -> None:
    layer = ffn.Augment(3, 2, noise=ffn.ConditionalNormal(2, 3))
    flow = ffn.Flow(ffn.StandardNormal(5), layer)
    assert flow.context_features is None and not flow.exact
    assert flow.log_prob(torch.randn(4, 3)).shape == (4,)
    assert flow.breakdown(torch.randn(4, 3)).rows[0][1:3] == ("Augment", "bound")


@pytest.mark.parametrize(("noise", "error", "message"), [
    (nn.Linear(3, 2), TypeError, r"Augment: noise must be .*got Linear"),
    (3, TypeError, r"Augment: noise must be .*got int"),
    ("gauss", ValueError, r"Augment.*noise"),
    (ffn.ConditionalNormal(3, 3), ValueError, r"Augment: the noise density must have event shape \(2,\)"),
    (ffn.ConditionalNormal(2, 4), ValueError, r"Augment: .*context_features=3.*got context_features=4"),
    (ffn.Flow(ffn.StandardNormal(2), ffn.Reverse()), ValueError, r"Augment: noise must be conditional"),
    (ffn.Flow(ffn.ConditionalNormal(3, 3), ffn.Augment(2, 1)), ValueError,
     r"Augment: noise must be an exact Flow"),
])
def test_bad_noise(noise: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        ffn.Augment(3, 2, noise=noise)  # type: ignore[arg-type]


def test_init_scale_with_a_conditional_density_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"Augment: init_scale"):
        ffn.Augment(3, 2, noise=ffn.ConditionalNormal(2, 3), init_scale=0.5)
