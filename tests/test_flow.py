"""Flow-level behaviour: normalisation, bounds, breakdown, sampling, errors."""

from __future__ import annotations

import pytest
import torch
from nflows.nn.nets import ResidualNet
from nflows.transforms import PiecewiseRationalQuadraticCouplingTransform

import survae_flowify as ffn
from survae_flowify.testing import perturb_parameters
from tests.oracles import linear_gaussian_log_prob


def _flow_1d() -> ffn.Flow:
    torch.manual_seed(0)
    t = ffn.Sequential(ffn.RqSpline(8, 2.5), ffn.LeakyReLU(0.4), ffn.RqSpline(5, 1.5))
    return ffn.Flow(ffn.DiagonalNormal(1), perturb_parameters(t, scale=0.8)).double()


def _flow_2d() -> ffn.Flow:
    torch.manual_seed(0)
    coupling = PiecewiseRationalQuadraticCouplingTransform(
        torch.tensor([1, 0]), lambda i, o: ResidualNet(i, o, 16, num_blocks=1), tails="linear",
        tail_bound=3.0,
    )
    t = ffn.Sequential(ffn.NflowsBijection(coupling, shape=2), ffn.LeakyReLU(0.5),
                       ffn.Slice(2, 1, inverse_density="diagonal"))
    return ffn.Flow(ffn.StandardNormal(1), perturb_parameters(t, scale=0.5)).double()


def test_exact_1d_flow_integrates_to_one() -> None:
    flow = _flow_1d()
    assert flow.exact
    grid = torch.linspace(-30, 30, 200_001, dtype=torch.float64)
    with torch.no_grad():
        density = flow.log_prob(grid[:, None]).exp()
    total = torch.trapezoid(density, grid).item()
    assert abs(total - 1) < 1e-4, total


def test_exact_2d_flow_with_slice_integrates_to_one() -> None:
    flow = _flow_2d()
    assert flow.exact
    # Midpoint rule on cells whose edges include 0, where LeakyReLU makes the density jump.
    n, half_width = 1200, 16.0
    h = 2 * half_width / n
    axis = -half_width + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    with torch.no_grad():
        density = flow.log_prob(torch.stack([xx, yy], -1).reshape(-1, 2)).exp()
    total = (density.sum() * h * h).item()
    assert abs(total - 1) < 1e-3, total


def test_importance_weighted_bound_tightens_with_k() -> None:
    torch.manual_seed(0)
    t = perturb_parameters(ffn.Sequential(ffn.Augment(1, 2), ffn.Repeat(3, 2)), scale=0.3)
    flow = ffn.Flow(ffn.StandardNormal(6), t).double()
    x = torch.tensor([[-1.0], [0.3], [2.0]], dtype=torch.float64)
    exact = linear_gaussian_log_prob(flow, x)
    with torch.no_grad():
        estimates = [flow.log_prob(x, num_samples=k).mean().item() for k in (1, 30, 3000)]
    gaps = [exact.mean().item() - e for e in estimates]
    assert gaps[0] > gaps[1] > gaps[2] > -0.02, gaps
    assert gaps[2] < 0.03


def test_augmentation_gap_report() -> None:
    torch.manual_seed(0)
    flow = ffn.Flow(ffn.StandardNormal(3), ffn.Augment(1, 2, noise="uniform")).double()
    x = torch.randn(4, 1, dtype=torch.float64)
    report = flow.augmentation_gap(x, num_samples=50)
    # The gap's value is checked against the closed-form support limits in
    # tests/test_uniform_noise.py; here: its shape and the bounded-support report.
    assert report.gap.shape == report.elbo.shape == report.iw_bound.shape == (4,)
    assert report.bounded_support and "bounded support" in str(report)
    normal = ffn.Flow(ffn.StandardNormal(3), ffn.Augment(1, 2)).double()
    assert not normal.augmentation_gap(x, num_samples=5).bounded_support


def test_breakdown_total_equals_log_prob() -> None:
    flow = _flow_2d()
    x = torch.randn(16, 2, dtype=torch.float64)
    table = flow.breakdown(x)
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(table.total, dtype=torch.float64),
                                   flow.log_prob(x).mean())
    text = str(table)
    for word in ("NflowsBijection", "LeakyReLU", "Slice", "base", "exact", "total"):
        assert word in text
    assert [r[0] for r in table.rows] == ["0", "1", "2", "base"]


def test_nested_breakdown_names() -> None:
    inner = ffn.Sequential(ffn.LeakyReLU(), ffn.RqSpline())
    flow = ffn.Flow(ffn.StandardNormal(3), ffn.Sequential(inner, ffn.Augment(2, 1)))
    names = [r[0] for r in flow.breakdown(torch.randn(2, 2)).rows]
    assert names == ["0.0", "0.1", "1", "base"]
    assert "bound" in str(flow.breakdown(torch.randn(2, 2)))


def test_sample_and_mean_sample() -> None:
    flow = _flow_2d()
    torch.manual_seed(0)
    s = flow.sample(7)
    assert s.shape == (7, 2) and s.dtype == torch.float64
    torch.manual_seed(1)
    m1 = flow.sample(5, mean=True)
    torch.manual_seed(1)
    m2 = flow.sample(5, mean=True)
    torch.testing.assert_close(m1, m2)
    recon = flow.reconstruct(s)
    assert recon.shape == s.shape


def test_exact_flag_follows_parts() -> None:
    assert ffn.Sequential(ffn.LeakyReLU(), ffn.Slice(3, 1)).exact
    assert not ffn.Sequential(ffn.LeakyReLU(), ffn.Augment(3, 1)).exact
    assert ffn.Flow(ffn.StandardNormal(4), ffn.Augment(3, 1)).exact is False


def test_errors_are_clear() -> None:
    flow = _flow_2d()
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        flow.log_prob(torch.randn(2, 2, dtype=torch.float64), num_samples=0)
    with pytest.raises(ValueError, match=r"n must be a positive int"):
        flow.sample(0)
    with pytest.raises(ValueError, match=r"NflowsBijection.*expected x of shape \(batch, 2\), got \(2, 3\)"):
        flow.log_prob(torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="Transform"):
        ffn.Flow(ffn.StandardNormal(2), torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="survae_flowify Transform"):
        ffn.Sequential(torch.nn.ReLU())
    with pytest.raises(ValueError, match=r"StandardNormal.*expected z of shape \(batch, 1\)"):
        flow.base.log_prob(torch.randn(2, 2))
    with pytest.raises(ValueError, match="Flatten: cannot invert without the unflattened shape"):
        ffn.Flatten().inverse(torch.randn(2, 4))


def test_validation_can_be_switched_off() -> None:
    layer = ffn.LeakyReLU()
    x = torch.tensor([[float("nan"), 1.0]])
    with pytest.raises(ValueError):
        layer(x)
    with ffn.validation(False):
        z, _ = layer(x)
    assert torch.isnan(z[0, 0])


def test_float32_and_float64_and_no_promotion() -> None:
    for dtype in (torch.float32, torch.float64):
        flow = _flow_2d().to(dtype)
        x = torch.randn(4, 2, dtype=dtype)
        with torch.no_grad():
            assert flow.log_prob(x).dtype == dtype
            assert flow.sample(2).dtype == dtype


def test_sequential_takes_named_parts_and_breakdown_shows_the_names() -> None:
    from collections import OrderedDict

    torch.manual_seed(0)
    encoder = ffn.Sequential(first=ffn.LeakyReLU(0.5), second=ffn.Augment(2, 1))
    model = ffn.Sequential(OrderedDict([("encoder", encoder), ("head", ffn.Slice(3, 2))]))
    assert model["head"] is model[1] and model["encoder"]["second"] is encoder[1]
    assert list(dict(model.named_children())) == ["encoder", "head"]
    flow = ffn.Flow(ffn.StandardNormal(2), model)
    x = torch.randn(5, 2)
    names = [r[0] for r in flow.breakdown(x).rows]
    assert names == ["encoder.first", "encoder.second", "head", "base"]
    assert "encoder.second" in str(flow.breakdown(x))
    assert "transform.encoder.second.noise.log_scale" in flow.state_dict()
    with pytest.raises(KeyError, match=r"no part named 'tail'; parts: encoder, head"):
        model["tail"]
    with pytest.raises(TypeError, match="not both"):
        ffn.Sequential(ffn.LeakyReLU(), b=ffn.LeakyReLU())
    with pytest.raises(TypeError, match=r"part 'b' is ReLU"):
        ffn.Sequential(a=ffn.LeakyReLU(), b=torch.nn.ReLU())
