"""Flow-level metrics against numbers that do not come from ``Flow.log_prob``.

``bits_per_dim`` is checked against ``−log p(x) / (D ln 2)`` with ``log p(x)`` from the
closed-form linear-Gaussian density (tests/oracles.py), for an exact flow and for a bound.
"""

from __future__ import annotations

import math

import torch

import survae_flowify as ffn
from survae_flowify.testing import perturb_parameters
from tests.oracles import linear_gaussian_log_prob


def test_bits_per_dim_of_an_exact_flow() -> None:
    torch.manual_seed(0)
    t = perturb_parameters(ffn.Sequential(ffn.Linear(3, 3), ffn.Linear(3, 2, inverse_density="diagonal")),
                           scale=0.5, seed=1)
    flow = ffn.Flow(ffn.StandardNormal(2), t).double()
    x = 2 * torch.randn(4, 3, dtype=torch.float64)
    want = -linear_gaussian_log_prob(flow, x) / (3 * math.log(2))
    with torch.no_grad():
        torch.testing.assert_close(flow.bits_per_dim(x), want, atol=1e-9, rtol=0)


def test_bits_per_dim_of_a_bound_approaches_the_oracle_from_above() -> None:
    torch.manual_seed(0)
    t = perturb_parameters(ffn.Sequential(ffn.Augment(2, 1), ffn.Linear(3, 3)), scale=0.4, seed=2)
    flow = ffn.Flow(ffn.StandardNormal(3), t).double()
    x = torch.randn(3, 2, dtype=torch.float64)
    exact_bpd = -linear_gaussian_log_prob(flow, x) / (2 * math.log(2))
    with torch.no_grad():
        elbo_bpd = torch.stack([flow.bits_per_dim(x) for _ in range(200)]).mean(0)
        iw_bpd = flow.bits_per_dim(x, num_samples=20_000)
    assert (elbo_bpd > exact_bpd + 0.01).all(), (elbo_bpd, exact_bpd)
    assert (iw_bpd < elbo_bpd).all() and ((iw_bpd - exact_bpd).abs() < 0.01).all(), (iw_bpd, exact_bpd)
