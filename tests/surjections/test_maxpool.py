"""MaxPool2d: on 1×2×2 images the density integrates to 1 (importance sampling from a heavy-
tailed proposal written here, not from the layer), right inverse, the pooled values, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import survae_flowify as ffn
from survae_flowify.surjections import MaxPool2d
from survae_flowify.testing import perturb_parameters
from survae_flowify.testing.strategies import batches, dtypes

N = 200_000


def _base(shape: tuple[int, ...], loc: float, log_scale: float) -> ffn.DiagonalNormal:
    base = ffn.DiagonalNormal(*shape).double()
    with torch.no_grad():
        base.loc.fill_(loc)
        base.log_scale.fill_(log_scale)
    return base


def _layer(kind: str, context_features: int | None = None, seed: int = 1) -> MaxPool2d:
    torch.manual_seed(0)
    layer = MaxPool2d(2, channels=1, inverse_density=kind, hidden=8, context_features=context_features)
    return perturb_parameters(layer.double(), scale=0.8, seed=seed)


def _t(df: float, loc: float, scale: float) -> torch.distributions.StudentT:
    f64 = torch.float64
    return torch.distributions.StudentT(torch.tensor(df, dtype=f64), torch.tensor(loc, dtype=f64),
                                        torch.tensor(scale, dtype=f64))


class _Proposal:
    """A density over ``(n, 1, 2, 2)`` images, written for this test: with probability 0.8 a
    "pooled" draw (the maximum ``m ~ t_5(0.3, 1)``, its position uniform, the three others
    ``m − g`` with ``g ~`` half-``t_3`` of scale 1.5), otherwise four independent ``t_3(−0.5, 1.5)``
    entries. Both parts have heavier tails than the flow's normal base and exponential gaps, so
    the weights ``p / r`` stay bounded. The pooled part's density uses ``x_i = m``,
    ``x_j = m − g_j`` (a unit-Jacobian map from ``(m, g)`` on the region where entry ``i`` is the
    maximum)."""

    top, gap, flat, share = _t(5.0, 0.3, 1.0), _t(3.0, 0.0, 1.5), _t(3.0, -0.5, 1.5), 0.8

    def sample(self, n: int) -> torch.Tensor:
        m = self.top.sample((n, 1))
        x = m - self.gap.sample((n, 4)).abs()
        x = x.scatter(1, torch.randint(4, (n, 1)), m)
        flat = self.flat.sample((n, 4))
        return torch.where(torch.rand(n, 1) < self.share, x, flat).view(n, 1, 2, 2)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        m = x.max(1, keepdim=True).values
        gaps = m - x  # one of them is the maximum's own 0, taken back out below
        log_gap = (math.log(2) + self.gap.log_prob(gaps)).sum(1) - (math.log(2) + self.gap.log_prob(
            torch.zeros(1, dtype=x.dtype)))
        pooled = self.top.log_prob(m[:, 0]) - math.log(4) + log_gap
        flat = self.flat.log_prob(x).sum(1)
        return torch.logaddexp(math.log(self.share) + pooled, math.log(1 - self.share) + flat)


def _importance_mass(flow: ffn.Flow, context: torch.Tensor | None = None) -> tuple[float, float]:
    """``E_r[p(x) / r(x)]`` under :class:`_Proposal`: the mass and its standard error."""
    proposal = _Proposal()
    x = proposal.sample(N)
    c = None if context is None else context.expand(N, -1)
    with torch.no_grad():
        w = (flow.log_prob(x, c) - proposal.log_prob(x)).exp()
    return float(w.mean()), float(w.std() / math.sqrt(N))


def test_the_proposal_is_a_density() -> None:
    """The proposal's own normalisation (so a mass of 1 below is the flow's): its mass, importance-
    sampled from a product of Cauchy densities (heavier tails still, so the weights stay bounded), is 1."""
    torch.manual_seed(9)
    wide = _t(1.0, 0.0, 2.0)
    x = wide.sample((N, 1, 2, 2))
    w = (_Proposal().log_prob(x) - wide.log_prob(x).flatten(1).sum(1)).exp()
    se = float(w.std()) / math.sqrt(N)
    assert se < 0.01 and abs(float(w.mean()) - 1.0) < 4 * se, (float(w.mean()), se)


@pytest.mark.parametrize("kind", ["fixed", "learned", "conditional"])
def test_density_on_2x2_images_integrates_to_one(kind: str) -> None:
    torch.manual_seed(2)
    flow = ffn.Flow(_base((1, 1, 1), 0.3, -0.2), _layer(kind))
    assert flow.exact
    estimate, se = _importance_mass(flow)
    assert se < 0.01, se
    assert abs(estimate - 1.0) < 4 * se, (estimate, se)


def test_conditional_density_integrates_to_one_for_several_contexts() -> None:
    torch.manual_seed(3)
    layer = _layer("conditional", context_features=2)
    flow = ffn.Flow(_base((1, 1, 1), 0.3, -0.2), layer)
    x = torch.randn(4, 1, 2, 2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(4)
    contexts = [torch.randn(1, 2, generator=gen, dtype=torch.float64) for _ in range(2)]
    for c in contexts:
        estimate, se = _importance_mass(flow, c)
        assert se < 0.01 and abs(estimate - 1.0) < 4 * se, (estimate, se)
    with torch.no_grad():
        a, b = (flow.log_prob(x, c.expand(4, -1)) for c in contexts)
    assert (a - b).abs().max() > 1e-3  # the context does change the density


def test_a_wrong_normalisation_would_show() -> None:
    """The same estimate over a flow whose density is deliberately off by a factor ``e^{0.05}``
    (an extra 0.05 nats) lands outside the tolerance: the check has the power to see it."""
    torch.manual_seed(2)
    flow = ffn.Flow(_base((1, 1, 1), 0.3, -0.2), ffn.Sequential(_layer("learned"), _Offset(0.05)))
    estimate, se = _importance_mass(flow)
    assert abs(estimate - 1.0) > 4 * se, (estimate, se)


class _Offset(ffn.Bijection):
    """The identity with a constant contribution (a wrong normalisation, for the power check)."""

    def __init__(self, nats: float) -> None:
        super().__init__()
        self.nats = nats

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.new_full((x.shape[0],), self.nats)

    def _inverse(self, z: torch.Tensor, *, mean: bool) -> torch.Tensor:
        return z


@settings(max_examples=30, deadline=None)
@given(data=st.data(), dtype=dtypes())
def test_right_inverse_holds_exactly(data: st.DataObject, dtype: torch.dtype) -> None:
    z = data.draw(batches((2, 2, 3), dtype=dtype))
    for kind in ("fixed", "learned", "conditional"):
        layer = MaxPool2d(2, channels=2, inverse_density=kind, hidden=4).to(dtype)
        perturb_parameters(layer, scale=1.0, seed=2)
        for mean in (False, True):
            x = layer.inverse(z, mean=mean)
            assert x.shape == (z.shape[0], 2, 4, 6)
            assert torch.equal(layer(x)[0], z)


def test_forward_is_max_pooling_and_the_inverse_puts_the_maximum_in_one_entry() -> None:
    torch.manual_seed(0)
    layer = MaxPool2d(3, channels=2)
    x = torch.randn(4, 2, 6, 9)
    z, _ = layer(x)
    assert torch.equal(z, torch.nn.functional.max_pool2d(x, 3))
    back = layer.inverse(z)
    patches = torch.nn.functional.unfold(back, 3, stride=3).view(4, 2, 9, -1)
    assert ((patches == z.flatten(2).unsqueeze(2)).sum(2) == 1).all()  # one entry holds z, the rest lie below


def test_learned_index_and_scales_shape_the_inverse() -> None:
    """With learned logits favouring entry 3 and scales 0.5: that entry holds the maximum about
    softmax-often, and the mean gaps are the scales."""
    torch.manual_seed(0)
    layer = MaxPool2d(2, channels=1)
    with torch.no_grad():
        layer.index_logits.copy_(torch.tensor([0.0, 0.0, 0.0, 2.0]).view(1, 4, 1, 1))
        layer.raw_gap_scale.fill_(5 * math.atanh(math.log(0.5) / 5))  # through the soft bound: s = 0.5
    z = torch.zeros(20_000, 1, 1, 1)
    x = layer.inverse(z).view(-1, 4)
    share = (x == 0).double().mean(0)
    expected = torch.softmax(torch.tensor([0.0, 0.0, 0.0, 2.0], dtype=torch.float64), 0)
    torch.testing.assert_close(share, expected, atol=0.01, rtol=0)
    mean_x = layer.inverse(z[:2], mean=True).view(-1, 4)
    torch.testing.assert_close(mean_x, torch.tensor([[-0.5, -0.5, -0.5, 0.0]]).expand(2, 4),
                               atol=1e-6, rtol=0)
    gaps = -x[x < 0]
    assert abs(float(gaps.detach().mean()) - 0.5) < 0.01


def test_bad_arguments_name_the_layer() -> None:
    with pytest.raises(ValueError, match=r"MaxPool2d: kernel_size must be an int >= 2, got 1"):
        MaxPool2d(1)
    with pytest.raises(TypeError, match=r"MaxPool2d: kernel_size must be an int >= 2, got 2.0"):
        MaxPool2d(2.0)
    with pytest.raises(ValueError, match=r"MaxPool2d: inverse_density must be one of 'fixed', "
                                         r"'learned', 'conditional', got 'normal'"):
        MaxPool2d(2, inverse_density="normal")
    with pytest.raises(ValueError, match=r"MaxPool2d: inverse_density='conditional' needs channels="):
        MaxPool2d(2, inverse_density="conditional")
    with pytest.raises(ValueError, match=r"MaxPool2d: context_features=3 needs "
                                         r"inverse_density='conditional'"):
        MaxPool2d(2, channels=1, context_features=3)
    with pytest.raises(ValueError, match=r"MaxPool2d: channels must be a positive int"):
        MaxPool2d(2, channels=0)


def test_bad_input_names_the_layer_and_the_sizes() -> None:
    layer = MaxPool2d(2, channels=3)
    with pytest.raises(ValueError, match=r"MaxPool2d\(kernel_size=2.*expected x of shape "
                                         r"\(batch, C, H, W\) with H and W divisible by kernel_size=2, "
                                         r"got \(1, 3, 5, 4\)"):
        layer(torch.randn(1, 3, 5, 4))
    with pytest.raises(ValueError, match=r"divisible by kernel_size=2, got \(1, 3, 4, 3\)"):
        layer(torch.randn(1, 3, 4, 3))
    shape = r"MaxPool2d\(.*expected {} of shape \(batch, 3, \*, \*\), got "
    with pytest.raises(ValueError, match=shape.format("x") + r"\(1, 2, 4, 4\)"):
        layer(torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match=shape.format("z") + r"\(2, 3, 4\)"):
        layer.inverse(torch.randn(2, 3, 4))
    conditional = MaxPool2d(2, channels=1, inverse_density="conditional", context_features=2)
    with pytest.raises(ValueError, match=r"MaxPool2d\(.*needs a context of shape \(2, 2\), got none"):
        conditional(torch.randn(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"MaxPool2d\(.*expected a context of shape \(2, 2\), got \(2, 5\)"):
        conditional.inverse(torch.randn(2, 1, 2, 2), torch.randn(2, 5))
