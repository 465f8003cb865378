"""Sort: mass on a grid (2-D) and by importance sampling (3-D), against the rest of the flow's
mass on the sorted cone; right inverse; the inverse's orders are uniform; bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import survae_flowify as ffn
from survae_flowify.surjections import Sort
from survae_flowify.testing import perturb_parameters
from survae_flowify.testing.strategies import batches, dtypes
from tests.surjections._grid import ConeToPlane, grid_2d, mass


def _coupling(d: int, seed: int, scale: float) -> ffn.AffineCoupling:
    torch.manual_seed(seed)
    return perturb_parameters(ffn.AffineCoupling(d, hidden=8).double(), scale=scale, seed=seed)


def _base(loc: list[float], log_scale: float) -> ffn.DiagonalNormal:
    base = ffn.DiagonalNormal(len(loc)).double()
    with torch.no_grad():
        base.loc.copy_(torch.tensor(loc))
        base.log_scale.fill_(log_scale)
    return base


def test_2d_mass_equals_the_rest_of_the_flow_on_the_sorted_half_plane() -> None:
    """``p(x) = q(sort x) / 2``: the ``x`` grid's mass equals ``q``'s mass on ``{z_1 < z_2}`` (the
    grid is symmetric, so its cells mirror across the diagonal; the diagonal's points count half)."""
    bijection = _coupling(2, 1, 1.0)
    rest = ffn.Flow(_base([0.5, -0.3], 0.0), bijection)
    flow = ffn.Flow(_base([0.5, -0.3], 0.0), ffn.Sequential(Sort(), bijection))
    assert flow.exact
    points, cell = grid_2d(-8.0, 8.0, 321)
    with torch.no_grad():
        q = rest.log_prob(points).exp()
    weight = (points[:, 0] < points[:, 1]).double() + 0.5 * (points[:, 0] == points[:, 1]).double()
    on_cone = float((q * weight).sum()) * cell
    assert 0.1 < on_cone < 0.9  # far from the whole mass: a wrong −log 2 would show
    assert mass(flow, points, cell) == pytest.approx(on_cone, rel=1e-9)


def test_2d_density_integrates_to_one() -> None:
    flow = ffn.Flow(_base([0.2, -0.5], -0.7), ffn.Sequential(Sort(), ConeToPlane(), _coupling(2, 2, 0.3)))
    points, cell = grid_2d(-8.0, 8.0, 500, shift=0.5)  # no ties, where ConeToPlane takes log 0
    assert mass(flow, points, cell) == pytest.approx(1.0, abs=3e-3)


def _importance_mass(flow: ffn.Flow, n: int, loc: float, scale: float, d: int) -> tuple[float, float]:
    """``E_r[p(x) / r(x)]`` under the proposal ``r = N(loc, scale² I)`` (wider than the flow's
    samples, so the weights stay bounded): the mass and its standard error."""
    proposal = torch.distributions.Normal(torch.full((d,), loc, dtype=torch.float64), scale)
    x = proposal.sample((n,))
    with torch.no_grad():
        w = (flow.log_prob(x) - proposal.log_prob(x).sum(1)).exp()
    return float(w.mean()), float(w.std() / math.sqrt(n))


def test_3d_density_integrates_to_one_by_importance_sampling() -> None:
    torch.manual_seed(0)
    flow = ffn.Flow(_base([0.2, -0.5, 0.1], -0.7),
                    ffn.Sequential(Sort(), ConeToPlane(), _coupling(3, 2, 0.3)))
    estimate, se = _importance_mass(flow, 200_000, 1.0, 2.0, 3)
    assert se < 0.01
    assert abs(estimate - 1.0) < 4 * se, (estimate, se)


def test_3d_mass_equals_the_rest_of_the_flow_on_the_sorted_cone() -> None:
    """The importance-sampled mass over ``x`` against the share of ``Flow(base, B)``'s own samples
    that land sorted (two independent Monte Carlo estimates, combined standard error)."""
    torch.manual_seed(1)
    bijection = _coupling(3, 1, 0.5)
    rest = ffn.Flow(_base([-0.5, 0.0, 0.5], -0.3), bijection)
    flow = ffn.Flow(_base([-0.5, 0.0, 0.5], -0.3), ffn.Sequential(Sort(), bijection))
    estimate, se = _importance_mass(flow, 200_000, 0.0, 2.5, 3)
    n = 200_000
    with torch.no_grad():
        z = rest.sample(n)
    sorted_share = float((z[:, 1:] >= z[:, :-1]).all(1).double().mean())
    se_share = math.sqrt(sorted_share * (1 - sorted_share) / n)
    assert 0.02 < sorted_share < 0.5
    assert abs(estimate - sorted_share) < 4 * math.hypot(se, se_share), (estimate, se, sorted_share)


def test_contribution_is_minus_log_d_factorial() -> None:
    for d in (1, 2, 5, 9):
        _, contribution = Sort()(torch.randn(3, d))
        torch.testing.assert_close(contribution, torch.full((3,), -math.log(math.factorial(d))))


@settings(max_examples=40, deadline=None)
@given(data=st.data(), dtype=dtypes())
def test_right_inverse_holds_exactly(data: st.DataObject, dtype: torch.dtype) -> None:
    z = data.draw(batches((4,), dtype=dtype)).sort(1).values
    for mean in (False, True):
        assert torch.equal(Sort()(Sort().inverse(z, mean=mean))[0], z)


def test_inverse_orders_are_uniform() -> None:
    """All 6 orders of 3 distinct values appear, each about 1/6 of the time; mean=True keeps z."""
    torch.manual_seed(0)
    z = torch.tensor([[1.0, 2.0, 3.0]]).expand(12_000, 3)
    x = Sort().inverse(z)
    counts = {p: 0 for p in itertools.permutations((1.0, 2.0, 3.0))}
    for row in x.tolist():
        counts[tuple(row)] += 1
    assert all(abs(c / 12_000 - 1 / 6) < 0.015 for c in counts.values()), counts
    assert torch.equal(Sort().inverse(z, mean=True), z)


def test_bad_input_names_the_layer() -> None:
    with pytest.raises(ValueError, match=r"Sort: expected x of shape \(batch, D\), got \(2, 3, 4\)"):
        Sort()(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"Sort: expected z of shape \(batch, D\), got \(2,\)"):
        Sort().inverse(torch.randn(2))
    with pytest.raises(ValueError, match=r"Sort: .*NaN"):
        Sort()(torch.tensor([[0.0, float("nan")]]))
