"""VariationalDequantize: a bound below the discrete likelihood, checked against numbers that do
not come from the layer (Gaussian CDFs, grid quadrature, autograd Jacobians of the encoder)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import survae_flowify as ffn
from survae_flowify.testing import perturb_parameters

F64 = torch.float64


def _gaussian_flow(levels: int, encoder: ffn.Flow) -> tuple[ffn.Flow, torch.distributions.Normal]:
    """``p(y) = N(y; 0.4, 0.15²)`` on the dequantized 1-D value, with its closed form."""
    base = ffn.DiagonalNormal(1)
    with torch.no_grad():
        base.loc.fill_(0.4)
        base.log_scale.fill_(math.log(0.15))
    layer = ffn.VariationalDequantize(levels, encoder)
    return ffn.Flow(base, layer).double(), torch.distributions.Normal(
        torch.tensor(0.4, dtype=F64), torch.tensor(0.15, dtype=F64))


def _discrete_log_prob(normal: torch.distributions.Normal, x: torch.Tensor, levels: int) -> torch.Tensor:
    """``log P(x) = log ∫_{x/L}^{(x+1)/L} p(y) dy`` from the Gaussian CDF."""
    return torch.log(normal.cdf((x + 1) / levels) - normal.cdf(x / levels)).squeeze(1)


def test_bound_stays_below_the_discrete_likelihood() -> None:
    """At perturbed (untrained) parameters the mean ELBO is strictly below ``log P(x)``."""
    torch.manual_seed(0)
    encoder = perturb_parameters(ffn.VariationalDequantize.default_encoder(1, hidden=8), seed=3)
    flow, normal = _gaussian_flow(4, encoder)
    x = torch.arange(4, dtype=F64).unsqueeze(1)
    exact = _discrete_log_prob(normal, x, 4)
    with torch.no_grad():
        elbo = torch.stack([flow.log_prob(x) for _ in range(2000)]).mean(0)
    assert (elbo < exact - 1e-3).all(), (elbo, exact)


def test_a_trained_encoder_is_a_tighter_bound_than_uniform_dequantization() -> None:
    """Fitting q(u | x) to the bins of a fixed model closes most of the gap that uniform noise
    leaves (the gap against the closed-form log P(x)), and the IW estimate of the trained
    bound approaches log P(x)."""
    torch.manual_seed(0)
    encoder = ffn.VariationalDequantize.default_encoder(1, hidden=16)
    flow, normal = _gaussian_flow(4, encoder)
    uniform = ffn.Flow(flow.base, ffn.Dequantize(4)).double()
    x = torch.arange(4, dtype=F64).unsqueeze(1)
    exact = _discrete_log_prob(normal, x, 4)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=2e-2)
    for _ in range(300):
        loss = -flow.log_prob(x.repeat(16, 1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        gap_learned = exact - torch.stack([flow.log_prob(x) for _ in range(2000)]).mean(0)
        gap_uniform = exact - torch.stack([uniform.log_prob(x) for _ in range(2000)]).mean(0)
        # The logit-normal q vanishes at the bin edges where p does not, so the importance
        # weights are heavy-tailed; the median of independent estimates is robust to spikes.
        iw = torch.stack([flow.log_prob(x, num_samples=5_000, chunk_size=5_000)
                          for _ in range(5)]).median(0).values
    assert (gap_learned > 0).all(), gap_learned  # still a bound
    # Summed over the bins: in the bin of the mode, where p is nearly flat, uniform noise is
    # already close to the best, and the logit-normal q of D = 1 cannot beat it there.
    assert gap_learned.sum() < 0.25 * gap_uniform.sum(), (gap_learned, gap_uniform)
    assert gap_learned.max() < 0.06, gap_learned
    assert (iw - exact).abs().max() < 0.01, (iw, exact)


def test_two_dimensional_bound_against_grid_quadrature() -> None:
    """A nonlinear 2-D model on 3 levels: ``P(x)`` by the midpoint rule over each bin of the
    continuous flow's density. The bound is below it at perturbed parameters; after a short
    fit of the encoder alone the IW estimate is close to it."""
    torch.manual_seed(1)
    rest = ffn.Sequential(ffn.Linear(2, 2), ffn.RqSpline(num_bins=4, tail_bound=2.0),
                          ffn.AffineCoupling(2, hidden=8))
    rest = perturb_parameters(rest.double(), scale=0.5, seed=4).requires_grad_(False)
    continuous = ffn.Flow(ffn.StandardNormal(2), rest).double()
    encoder = perturb_parameters(
        ffn.VariationalDequantize.default_encoder(2, hidden=16, couplings=2).double(), seed=5)
    flow = ffn.Flow(ffn.StandardNormal(2), ffn.Sequential(ffn.VariationalDequantize(3, encoder), *rest))
    n = 120  # midpoints per bin and axis
    t = (torch.arange(n, dtype=F64) + 0.5) / n
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    x = torch.tensor([[0, 0], [1, 2], [2, 1]], dtype=F64)
    with torch.no_grad():
        exact = torch.stack([
            torch.logsumexp(continuous.log_prob((xi + grid) / 3), 0) - math.log(n * n) - 2 * math.log(3)
            for xi in x])
        elbo = torch.stack([flow.log_prob(x) for _ in range(500)]).mean(0)
    assert (elbo < exact - 1e-3).all(), (elbo, exact)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    for _ in range(200):
        loss = -flow.log_prob(x.repeat(8, 1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        trained = torch.stack([flow.log_prob(x) for _ in range(500)]).mean(0)
        iw = torch.stack([flow.log_prob(x, num_samples=5_000, chunk_size=5_000)
                          for _ in range(3)]).median(0).values
    assert (trained < exact).all() and (trained > elbo).all(), (trained, elbo, exact)
    assert (iw - exact).abs().max() < 0.02, (iw, exact)


def test_contribution_matches_an_autograd_jacobian_of_the_encoder() -> None:
    """``V = −D log L − log q(u | x)`` with ``log q(u | x) = log N(w; μ(c), σ(c)²) − log|det ∂u/∂w|``
    for ``u = σ(T⁻¹(w; c))``: the Jacobian by autograd, the base density by torch.distributions."""
    torch.manual_seed(2)
    levels, d = 5, 3
    encoder = perturb_parameters(
        ffn.VariationalDequantize.default_encoder(d, hidden=8, couplings=2, coupling="spline").double(),
        scale=0.5, seed=6)
    layer = ffn.VariationalDequantize(levels, encoder)
    x = torch.randint(0, levels, (4, d)).to(F64)
    with torch.no_grad():
        y, contribution = layer(x)
    c = 2 * x / (levels - 1) - 1
    u = y * levels - x
    assert ((u > 0) & (u < 1)).all()
    w, _ = encoder.transform(torch.logit(u), c)
    expected = []
    for i in range(len(x)):
        def to_u(wi: torch.Tensor, i: int = i) -> torch.Tensor:
            return torch.sigmoid(encoder.transform.inverse(wi[None], c[i:i + 1]))[0]
        jac = torch.autograd.functional.jacobian(to_u, w[i].detach())
        loc, log_scale = encoder.base.params(c[i:i + 1])
        log_base = torch.distributions.Normal(loc[0], log_scale[0].exp()).log_prob(w[i]).sum()
        log_q = log_base - torch.linalg.slogdet(jac)[1]
        expected.append(-d * math.log(levels) - log_q)
    torch.testing.assert_close(contribution, torch.stack(expected).detach(), atol=1e-8, rtol=1e-8)


def test_interchangeable_with_dequantize() -> None:
    """Same output convention: every output lies in the bin of its input, the inverse is
    Dequantize's, and with the noise off both give the bin centres and ``−D log L``."""
    encoder = ffn.VariationalDequantize.default_encoder((1, 2, 2), hidden=8, couplings=1)
    layer = ffn.VariationalDequantize(17, encoder, shape=(1, 2, 2))
    plain = ffn.Dequantize(17)
    x = torch.randint(0, 17, (6, 1, 2, 2), dtype=torch.uint8)
    y, _ = layer(x)
    assert torch.equal(torch.floor(y * 17), x.float())
    assert torch.equal(layer.inverse(y), plain.inverse(y))
    with ffn.noise_off():
        for got, want in zip(layer(x), plain(x), strict=True):
            torch.testing.assert_close(got, want)


def test_the_encoder_context_does_not_leak_into_the_flow() -> None:
    """The encoder is conditioned on x, not on the flow's context: an unconditional flow over a
    VariationalDequantize needs no context; a conditional one keeps its own context size."""
    layer = ffn.VariationalDequantize(4, ffn.VariationalDequantize.default_encoder(3, hidden=8))
    flow = ffn.Flow(ffn.StandardNormal(3), ffn.Sequential(layer, ffn.AffineCoupling(3, hidden=8)))
    assert flow.context_features is None
    x = torch.randint(0, 4, (5, 3))
    assert flow.log_prob(x).shape == (5,)
    conditional = ffn.Flow(ffn.ConditionalNormal(3, 2), layer)
    assert conditional.context_features == 2
    assert conditional.log_prob(x, torch.randn(5, 2)).shape == (5,)


def test_kind_and_breakdown() -> None:
    layer = ffn.VariationalDequantize(4, ffn.VariationalDequantize.default_encoder(2, hidden=8))
    assert not layer.exact and layer.stochastic_forward and not layer.stochastic_inverse
    flow = ffn.Flow(ffn.StandardNormal(2), ffn.Sequential(layer, ffn.RqSpline()))
    assert not flow.exact
    rows = flow.breakdown(torch.randint(0, 4, (8, 2))).rows
    assert rows[0][1:3] == ("VariationalDequantize", "bound")


@pytest.mark.parametrize("levels", [1, 0, -3, 2.5, "8", True])
def test_bad_levels(levels: object) -> None:
    encoder = ffn.VariationalDequantize.default_encoder(2)
    with pytest.raises((ValueError, TypeError), match=r"VariationalDequantize.*levels"):
        ffn.VariationalDequantize(levels, encoder)  # type: ignore[arg-type]


def test_bad_encoders() -> None:
    with pytest.raises(TypeError, match=r"VariationalDequantize: encoder must be .*got Linear"):
        ffn.VariationalDequantize(4, nn.Linear(2, 2))  # type: ignore[arg-type]
    unconditional = ffn.Flow(ffn.StandardNormal(2), ffn.AffineCoupling(2))
    with pytest.raises(ValueError, match=r"VariationalDequantize: encoder must be conditional"):
        ffn.VariationalDequantize(4, unconditional)
    with pytest.raises(ValueError, match=r"VariationalDequantize: .*=2.*got context_features=3"):
        ffn.VariationalDequantize(4, ffn.ConditionalNormal(2, 3))
    with pytest.raises(ValueError, match=r"VariationalDequantize: the encoder must be a density over R\^4"):
        ffn.VariationalDequantize(4, ffn.ConditionalNormal(3, 4), shape=(1, 2, 2))
    bound = ffn.Flow(ffn.ConditionalNormal(3, 2), ffn.Sequential(ffn.Augment(2, 1)))
    with pytest.raises(ValueError, match=r"VariationalDequantize: encoder must be an exact Flow"):
        ffn.VariationalDequantize(4, bound)
    with pytest.raises(ValueError, match=r"VariationalDequantize.*coupling"):
        ffn.VariationalDequantize.default_encoder(2, coupling="glow")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [[[0.5, 1.0]], [[4.0, 0.0]], [[-1.0, 2.0]], [[0.25, 0.75]]])
def test_non_integer_or_out_of_range_input(bad: list) -> None:
    layer = ffn.VariationalDequantize(4, ffn.VariationalDequantize.default_encoder(2, hidden=8))
    message = r"VariationalDequantize\(levels=4\): expected integer values in \[0, 3\]"
    with pytest.raises(ValueError, match=message):
        layer(torch.tensor(bad))


def test_wrong_input_shape_names_the_layer() -> None:
    layer = ffn.VariationalDequantize(4, ffn.VariationalDequantize.default_encoder(2, hidden=8))
    with pytest.raises(ValueError, match=r"VariationalDequantize.*expected x of shape \(batch, 2\)"):
        layer(torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"VariationalDequantize.*integer"):
        layer(torch.zeros(3, 2, dtype=torch.bool))


@pytest.mark.slow  # ~10 s: trains both digits models for a few steps
def test_dequantization_benchmark_prints_both_rows() -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "dequantization.py"
    result = subprocess.run(
        [sys.executable, str(script), "--steps", "3", "--draws", "1", "--iw", "2", "--hidden", "8"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()]
    rows = [r for r in rows if r and r[0] in ("uniform", "variational")]
    assert [r[0] for r in rows] == ["uniform", "variational"], result.stdout
    assert all(math.isfinite(float(r[1])) and math.isfinite(float(r[2])) for r in rows), result.stdout
    assert "difference (variational − uniform)" in result.stdout
