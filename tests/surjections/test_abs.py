"""Abs: mass on a grid (independent of the sign density's code), right inverse, a learned sign
share, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import survae_flowify as ffn
from survae_flowify.surjections import Abs
from survae_flowify.testing import perturb_parameters
from survae_flowify.testing.strategies import batches, dtypes
from tests.surjections._grid import LogBijection, grid_2d, mass

KINDS = ["learned", "uniform"]


def _abs(kind: str, context_features: int | None = None) -> Abs:
    torch.manual_seed(0)
    layer = Abs(2, sign_density=kind, hidden=8, context_features=context_features).double()
    # scale 2: logits of several units, far from the uniform signs of the initialisation
    return perturb_parameters(layer, scale=2.0, seed=3)


def _coupling(seed: int, scale: float = 1.0) -> ffn.AffineCoupling:
    torch.manual_seed(seed)
    return perturb_parameters(ffn.AffineCoupling(2, hidden=8).double(), scale=scale, seed=seed)


def _shifted_base() -> ffn.DiagonalNormal:
    base = ffn.DiagonalNormal(2).double()
    with torch.no_grad():
        base.loc.copy_(torch.tensor([0.4, -0.7]))
        base.log_scale.copy_(torch.tensor([-0.2, 0.1]))
    return base


def _log_normal_flow(layer: Abs) -> ffn.Flow:
    """``|x| = exp(w)`` with ``w`` from a narrow base through a mild coupling: all mass within
    ``|x_i| < 12`` (measured from samples: the 99.9 % quantiles of ``|x_i|`` below 6)."""
    base = ffn.DiagonalNormal(2).double()
    with torch.no_grad():
        base.loc.copy_(torch.tensor([0.3, -0.4]))
        base.log_scale.fill_(-1.0)
    return ffn.Flow(base, ffn.Sequential(layer, LogBijection(), _coupling(2, scale=0.3)))


@pytest.mark.parametrize("kind", KINDS)
def test_mass_equals_the_rest_of_the_flow_on_the_positive_quadrant(kind: str) -> None:
    """``p(x) = q(|x|) p(s | |x|)`` with ``q`` the density of ``Flow(base, B)``: the mass over the
    ``x`` grid equals ``q``'s mass on the positive-quadrant grid (the same cells, mirrored), which
    is far from 1 here. Only the signs' normalisation makes the two agree."""
    bijection = _coupling(1)
    with_abs = ffn.Flow(_shifted_base(), ffn.Sequential(_abs(kind), bijection))
    rest = ffn.Flow(_shifted_base(), bijection)
    assert with_abs.exact
    x, cell = grid_2d(-7.0, 7.0, 280)  # an even count: the axes are cell boundaries
    z, _ = grid_2d(0.0, 7.0, 140)
    on_quadrant = mass(rest, z, cell)
    assert 0.1 < on_quadrant < 0.8  # not the whole mass: a missing or extra factor would show
    assert mass(with_abs, x, cell) == pytest.approx(on_quadrant, rel=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_density_integrates_to_one_when_the_rest_covers_the_quadrant(kind: str) -> None:
    """Behind ``Abs``, ``log`` maps the positive quadrant onto the plane: the flow's density over
    ``x`` then integrates to 1 on a grid."""
    flow = _log_normal_flow(_abs(kind))
    x, cell = grid_2d(-12.0, 12.0, 600)
    assert mass(flow, x, cell) == pytest.approx(1.0, abs=4e-3)


def test_conditional_mass_is_one_for_several_contexts() -> None:
    layer = _abs("learned", context_features=3)
    flow = _log_normal_flow(layer)
    x, cell = grid_2d(-12.0, 12.0, 400)
    gen = torch.Generator().manual_seed(5)
    densities = []
    for _ in range(3):
        c = torch.randn(1, 3, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            p = flow.log_prob(x, c.expand(x.shape[0], 3)).exp()
        assert float(p.sum()) * cell == pytest.approx(1.0, abs=5e-3)
        densities.append(p)
    assert (densities[0] - densities[1]).abs().max() > 1e-3  # the signs do depend on the context


@settings(max_examples=40, deadline=None)
@given(data=st.data(), dtype=dtypes())
def test_right_inverse_holds_exactly(data: st.DataObject, dtype: torch.dtype) -> None:
    z = data.draw(batches((3,), dtype=dtype)).abs()
    layer = perturb_parameters(Abs(3, hidden=8).to(dtype), scale=2.0, seed=1)
    for mean in (False, True):
        x = layer.inverse(z, mean=mean)
        assert torch.equal(layer(x)[0], z)


def test_inverse_draws_both_signs_and_mean_takes_the_likelier() -> None:
    layer = Abs(sign_density="uniform")
    z = torch.ones(4000, 2)
    share = (layer.inverse(z) > 0).double().mean()
    assert 0.47 < share < 0.53
    assert torch.equal(layer.inverse(z, mean=True), z)  # a tie goes to +1
    learned = Abs(2, hidden=4)
    with torch.no_grad():
        learned.net.out.bias.copy_(torch.tensor([3.0, -3.0]))  # P(+) = σ(3), σ(−3)
    x = learned.inverse(z)
    assert torch.equal(learned.inverse(z, mean=True)[0], torch.tensor([1.0, -1.0]))
    torch.testing.assert_close((x > 0).double().mean(0), torch.tensor([0.9526, 0.0474], dtype=torch.float64),
                               atol=0.02, rtol=0)


def test_zero_counts_as_positive_and_maps_back_to_zero() -> None:
    layer = Abs(2, hidden=4)
    with torch.no_grad():
        layer.net.out.bias.copy_(torch.tensor([2.0, -1.0]))
    x = torch.zeros(3, 2)
    z, contribution = layer(x)
    expected = torch.log(torch.sigmoid(torch.tensor(2.0))) + torch.log(torch.sigmoid(torch.tensor(-1.0)))
    torch.testing.assert_close(contribution, expected.expand(3))
    assert torch.equal(layer.inverse(z), x.abs())


def test_learned_sign_density_recovers_an_asymmetric_share() -> None:
    """Data with 80 % positive signs in each coordinate (independent of ``|x|``): a few hundred
    steps of maximum likelihood bring the predicted share, and the inverse's samples, to 0.8."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    n = 2000
    sign = torch.where(torch.rand(n, 2, generator=gen) < 0.8, 1.0, -1.0)
    data = sign * (0.5 + torch.rand(n, 2, generator=gen))
    layer = Abs(2, hidden=16)
    flow = ffn.Flow(ffn.DiagonalNormal(2), layer)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        (-flow.log_prob(data).mean()).backward()
        opt.step()
    with torch.no_grad():
        share = torch.sigmoid(layer.sign_logits(data.abs())).mean(0)
        sampled = (layer.inverse(data.abs()) > 0).double().mean(0)
    torch.testing.assert_close(share, torch.full((2,), 0.8), atol=0.05, rtol=0)
    torch.testing.assert_close(sampled, torch.full((2,), 0.8, dtype=torch.float64), atol=0.05, rtol=0)


def test_breakdown_shows_the_sign_term() -> None:
    flow = ffn.Flow(ffn.StandardNormal(3), ffn.Sequential(Abs(sign_density="uniform"), ffn.Reverse()))
    x = torch.randn(5, 3)
    table = flow.breakdown(x)
    rows = {r[1]: r for r in table.rows}
    assert rows["Abs"][2] == "exact"
    assert rows["Abs"][3] == pytest.approx(-3 * torch.log(torch.tensor(2.0)).item())
    assert table.total == pytest.approx(float(flow.log_prob(x).mean()), rel=1e-6)


def test_bad_arguments_name_the_layer() -> None:
    with pytest.raises(ValueError, match=r"Abs: sign_density must be one of 'learned', 'uniform', "
                                         r"got 'half'"):
        Abs(2, sign_density="half")
    with pytest.raises(ValueError, match=r"Abs: sign_density='learned' needs the event shape"):
        Abs()
    with pytest.raises(ValueError, match=r"Abs: context_features=2 needs sign_density='learned'"):
        Abs(2, sign_density="uniform", context_features=2)
    with pytest.raises(ValueError, match=r"Abs: shape must be"):
        Abs((2, 0))
    with pytest.raises(ValueError, match=r"Abs: context_features must be a positive int"):
        Abs(2, context_features=0)
    with pytest.raises(ValueError, match=r"Abs: hidden must be a positive int"):
        Abs(2, hidden=0)


def test_wrong_shapes_and_contexts_raise() -> None:
    layer = Abs(3, hidden=4, context_features=2)
    with pytest.raises(ValueError, match=r"Abs\(.*expected x of shape \(batch, 3\), got \(4, 2\)"):
        layer(torch.randn(4, 2), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"Abs\(.*needs a context of shape \(4, 2\), got none"):
        layer(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"Abs\(.*expected a context of shape \(4, 2\), got \(4, 3\)"):
        layer.inverse(torch.rand(4, 3), torch.randn(4, 3))


def test_learned_sign_density_follows_the_magnitude() -> None:
    """Signs whose share depends on ``|x|`` (30 % positive below 1.2, 80 % above): the network on
    ``z`` learns both shares (checked away from the step, where a smooth net cannot be sharp)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    n = 4000
    r = 0.2 + 2 * torch.rand(n, 1, generator=gen)
    p_plus = torch.where(r > 1.2, 0.8, 0.3)
    data = torch.where(torch.rand(n, 1, generator=gen) < p_plus, r, -r)
    layer = Abs(1, hidden=16)
    flow = ffn.Flow(ffn.DiagonalNormal(1), layer)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        (-flow.log_prob(data).mean()).backward()
        opt.step()
    with torch.no_grad():
        low = torch.sigmoid(layer.sign_logits(torch.linspace(0.3, 0.9, 20)[:, None]))
        high = torch.sigmoid(layer.sign_logits(torch.linspace(1.5, 2.1, 20)[:, None]))
    assert (low - 0.3).abs().max() < 0.08 and (high - 0.8).abs().max() < 0.08, (low, high)
