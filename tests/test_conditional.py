"""Conditional flows: densities over x for every context, the context through every Flow call,
the embedding, and the errors for a missing or misshapen context (DESIGN.md §8)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import survae_flowify as ffn
from survae_flowify.distributions import ConditionalNormal
from survae_flowify.testing import perturb_parameters

K = 3  # context size of the test flows
CONTEXTS = torch.tensor([[0.0, 0.0, 0.0], [1.5, -1.0, 0.5], [-2.0, 0.7, 1.2]], dtype=torch.float64)


def _conditional_2d_flow() -> ffn.Flow:
    """2-D, exact, conditional in two places: a Slice whose density sees ``[kept, context]`` and
    a learned conditional base. LeakyReLU first, so its kinks lie on the grid's cell edges."""
    torch.manual_seed(0)
    t = ffn.Sequential(
        ffn.LeakyReLU(0.5), ffn.Linear(2, 2), ffn.RqSpline(6, 3.0),
        ffn.Slice(2, 1, inverse_density="conditional", context_features=K, hidden=8),
    )
    flow = ffn.Flow(ConditionalNormal(1, K, hidden=8), t).double()
    return perturb_parameters(flow, scale=0.5, seed=3)


def _grid(n: int, half_width: float) -> tuple[torch.Tensor, float]:
    h = 2 * half_width / n
    axis = -half_width + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    xx, yy = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx, yy], -1).reshape(-1, 2), h


def test_conditional_2d_flow_integrates_to_one_for_every_context_and_depends_on_it() -> None:
    flow = _conditional_2d_flow()
    assert flow.exact and flow.context_features == K
    points, h = _grid(900, 15.0)
    densities = []
    with torch.no_grad():
        for c in CONTEXTS:
            density = flow.log_prob(points, c.expand(len(points), K)).exp()
            total = (density.sum() * h * h).item()
            assert abs(total - 1) < 2e-3, (c, total)
            densities.append(density)
    # The density changes with the context: a total-variation distance well above the grid error.
    for a, b in ((0, 1), (0, 2), (1, 2)):
        tv = 0.5 * ((densities[a] - densities[b]).abs().sum() * h * h).item()
        assert tv > 0.05, (a, b, tv)


def test_conditional_reducing_linear_flow_integrates_to_one() -> None:
    """The conditional inverse density of a reducing Linear (its network sees ``[z, context]``)."""
    torch.manual_seed(1)
    t = ffn.Sequential(ffn.LeakyReLU(0.5),
                       ffn.Linear(2, 1, inverse_density="conditional", context_features=K, hidden=8))
    flow = perturb_parameters(ffn.Flow(ffn.StandardNormal(1), t).double(), scale=0.5, seed=4)
    points, h = _grid(900, 15.0)
    with torch.no_grad():
        totals = [(flow.log_prob(points, c.expand(len(points), K)).exp().sum() * h * h).item()
                  for c in CONTEXTS]
        lp = [flow.log_prob(points[:50], c.expand(50, K)) for c in CONTEXTS]
    assert all(abs(total - 1) < 2e-3 for total in totals), totals
    assert (lp[0] - lp[1]).abs().max() > 0.1 and (lp[0] - lp[2]).abs().max() > 0.1


def test_conditional_base_matches_the_closed_form_through_a_linear_layer() -> None:
    """``x = W⁻¹(z − b)``, ``z ~ N(μ(a), diag σ(a)²)``: ``x ~ N(W⁻¹(μ − b), W⁻¹ Σ W⁻ᵀ)``. μ, σ are
    read from the base's network; the density formula is torch's MultivariateNormal."""
    torch.manual_seed(2)
    layer = ffn.Linear(3, 3)
    flow = perturb_parameters(ffn.Flow(ConditionalNormal(3, K), layer).double(), scale=0.8, seed=5)
    context = CONTEXTS
    x = torch.randn(3, 3, dtype=torch.float64)
    with torch.no_grad():
        loc, log_scale = flow.base.params(context)
        w_inv = torch.linalg.inv(layer.weight)
        mean = (loc - layer.bias) @ w_inv.T
        cov = w_inv @ torch.diag_embed(torch.exp(2 * log_scale)) @ w_inv.T
        exact = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)
        torch.testing.assert_close(flow.log_prob(x, context), exact, atol=1e-10, rtol=0)
        assert (loc[0] - loc[1]).abs().max() > 0.1  # the parameters do depend on the context


def test_iw_bound_with_context_approaches_the_closed_form() -> None:
    """A bound: ``x`` is the first coordinate of ``W⁻¹(z − b)`` (Augment adds one noise
    coordinate, then a square Linear), ``z ~ N(μ(a), diag σ(a)²)``. Three data with three
    different contexts: a context repeated in the wrong order across the importance draws
    would pair a datum with another datum's context and miss the closed form."""
    torch.manual_seed(3)
    layer = ffn.Linear(2, 2)
    t = ffn.Sequential(ffn.Augment(1, 1), layer)
    flow = perturb_parameters(ffn.Flow(ConditionalNormal(2, K), t).double(), scale=0.8, seed=6)
    x = torch.tensor([[-0.8], [0.4], [1.3]], dtype=torch.float64)
    with torch.no_grad():
        loc, log_scale = flow.base.params(CONTEXTS)
        w_inv = torch.linalg.inv(layer.weight)
        mean = ((loc - layer.bias) @ w_inv.T)[:, 0]
        var = w_inv.square() @ torch.exp(2 * log_scale).T  # Var y_i = Σ_j (W⁻¹)_{ij}² σ_j², (2, B)
        # The noise u is y_1; a proposal q(u) wider than every posterior of y_1 given y_0 keeps
        # the importance weights bounded, so the IW estimate converges without spikes.
        t[0].noise.log_scale.fill_(math.log(2 * var[1].max().sqrt().item()))
        var = var[0]
        exact = torch.distributions.Normal(mean, var.sqrt()).log_prob(x[:, 0])
        elbo = torch.stack([flow.log_prob(x, CONTEXTS) for _ in range(200)]).mean(0)
        iw = torch.stack([flow.log_prob(x, CONTEXTS, num_samples=20_000, chunk_size=7_000)
                          for _ in range(5)]).median(0).values
        gap = flow.augmentation_gap(x, CONTEXTS, num_samples=64)
    assert (elbo < exact).all(), (elbo, exact)
    assert (iw <= exact + 0.03).all() and (exact - iw).max() < 0.05, (iw, exact)
    assert gap.gap.shape == (3,) and (gap.gap >= 0).all()


def test_sample_and_log_prob_agrees_with_log_prob_of_the_samples() -> None:
    flow = _conditional_2d_flow()
    context = CONTEXTS[1].expand(64, K)
    torch.manual_seed(4)
    x, log_p = flow.sample_and_log_prob(64, context)
    assert x.shape == (64, 2) and log_p.shape == (64,)
    assert log_p.requires_grad  # differentiable in the parameters
    with torch.no_grad():
        torch.testing.assert_close(log_p.detach(), flow.log_prob(x, context), atol=1e-9, rtol=1e-9)
    # And the samples follow the density: their mean log-density is the (negative) entropy,
    # which must differ between contexts whose densities differ.
    torch.manual_seed(4)
    _, other = flow.sample_and_log_prob(64, CONTEXTS[2].expand(64, K))
    assert not torch.allclose(log_p, other)


def test_sample_and_log_prob_refuses_a_bound() -> None:
    flow = ffn.Flow(ffn.StandardNormal(3), ffn.Sequential(ffn.Linear(2, 2), ffn.Augment(2, 1)))
    with pytest.raises(ValueError, match=r"sample_and_log_prob: needs an exact flow.*Augment"):
        flow.sample_and_log_prob(4)


def test_sample_takes_one_context_row_per_sample() -> None:
    flow = _conditional_2d_flow()
    torch.manual_seed(5)
    with torch.no_grad():
        x = flow.sample(500, CONTEXTS[1].expand(500, K))
        x_mean = flow.sample(3, CONTEXTS, mean=True)
    assert x.shape == (500, 2) and x_mean.shape == (3, 2)
    with pytest.raises(ValueError, match=r"Flow: expected a context of shape \(4, 3\), got \(3, 3\)"):
        flow.sample(4, CONTEXTS)
    with pytest.raises(ValueError, match=r"Flow: needs a context of shape \(4, 3\), got none"):
        flow.sample(4)


class CountingEmbedding(nn.Module):
    """One-hot labels ``(B, 5)`` → ``(B, K)``, counting its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(5, K)
        self.calls = 0

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(labels)


def _embedded_flow() -> ffn.Flow:
    torch.manual_seed(6)
    t = ffn.Sequential(ffn.Augment(2, 1),
                       ffn.Linear(3, 2, inverse_density="conditional", context_features=K))
    flow = ffn.Flow(ConditionalNormal(2, K), t, embedding=CountingEmbedding()).double()
    return perturb_parameters(flow, scale=0.5, seed=7)


def test_embedding_is_applied_exactly_once_per_call() -> None:
    flow = _embedded_flow()
    labels = nn.functional.one_hot(torch.tensor([0, 3, 4, 1]), 5).double()
    x = torch.randn(4, 2, dtype=torch.float64)
    calls = [
        lambda: flow.log_prob(x, labels),
        lambda: flow.log_prob(x, labels, num_samples=10, chunk_size=3),  # four chunks
        lambda: flow.augmentation_gap(x, labels, num_samples=10, chunk_size=3),
        lambda: flow.bits_per_dim(x, labels, num_samples=5),
        lambda: flow.sample(4, labels),
        lambda: flow.reconstruct(x, labels),
        lambda: flow.breakdown(x, labels),
    ]
    for i, call in enumerate(calls):
        before = flow.embedding.calls
        call()
        assert flow.embedding.calls == before + 1, i


def test_embedded_context_reaches_layers_and_base() -> None:
    """The result depends on the labels, through the embedding."""
    flow = _embedded_flow()
    x = torch.randn(2, 2, dtype=torch.float64)
    a = nn.functional.one_hot(torch.tensor([0, 0]), 5).double()
    b = nn.functional.one_hot(torch.tensor([2, 2]), 5).double()
    with ffn.noise_off(), torch.no_grad():
        assert (flow.log_prob(x, a) - flow.log_prob(x, b)).abs().min() > 1e-3


def test_the_context_check_applies_after_the_embedding() -> None:
    flow = _embedded_flow()
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"Flow: needs a context of shape \(4, 3\), got none"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match=r"Flow: the embedding CountingEmbedding failed on a context "
                                         r"of shape \(4, 3\)"):
        flow.log_prob(x, torch.randn(4, K, dtype=torch.float64))  # raw labels are (B, 5)
    flow.embedding = nn.Linear(5, K + 1).double()
    with pytest.raises(ValueError, match=r"expected a context of shape \(4, 3\), got \(4, 4\) "
                                         r"\(after the embedding\)"):
        flow.log_prob(x, torch.randn(4, 5, dtype=torch.float64))


def test_flow_level_context_errors() -> None:
    flow = _conditional_2d_flow()
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^Flow: needs a context of shape \(4, 3\), got none"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match=r"^Flow: expected a context of shape \(4, 3\), got \(4, 2\)"):
        flow.breakdown(x, torch.randn(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"context has dtype torch.float32"):
        flow.log_prob(x, torch.randn(4, K))
    bad = torch.randn(4, K, dtype=torch.float64)
    bad[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"context contains NaN"):
        flow.log_prob(x, bad)
    with pytest.raises(ValueError, match=r"different sizes \(ConditionalNormal takes 2, Slice takes 3\)"):
        ffn.Flow(ConditionalNormal(1, 2), flow.transform)
    with pytest.raises(TypeError, match=r"Flow: embedding must be a torch.nn.Module"):
        ffn.Flow(ffn.StandardNormal(1), flow.transform, embedding=lambda c: c)  # type: ignore[arg-type]


def test_unconditional_layers_and_densities_ignore_a_context() -> None:
    """Without ``context_features`` a layer behaves exactly as before, context or not."""
    torch.manual_seed(7)
    for t, shape in ((ffn.Slice(4, 2, inverse_density="conditional"), (4,)),
                     (ffn.Linear(4, 2, inverse_density="conditional"), (4,)),
                     (ffn.Conv2d(1, 2, 2, 2, image_size=4), (1, 4, 4))):
        perturb_parameters(t)
        x = torch.randn(3, *shape)
        z, v = t(x)
        z_c, v_c = t(x, torch.randn(3, 7))
        assert torch.equal(z, z_c) and torch.equal(v, v_c)
        torch.testing.assert_close(t.inverse(z, torch.randn(3, 7), mean=True), t.inverse(z, mean=True))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ffn.Slice(4, 2, context_features=3),
         r"Slice: context_features=3 needs inverse_density='conditional'.*got inverse_density='normal'"),
        (lambda: ffn.Linear(4, 2, inverse_density="diagonal", context_features=3),
         r"Linear: context_features=3 needs inverse_density='conditional'"),
        (lambda: ffn.Linear(3, 3, inverse_density="conditional", context_features=3),
         r"Linear\(3, 3\): context_features is used by .* reducing layer"),
        (lambda: ffn.Conv2d(1, 8, 2, 2, context_features=3),
         r"Conv2d\(1, 8, kernel_size=2\): context_features .* drops nothing"),
        (lambda: ffn.PatchLinear(4, 4, context_features=2), r"PatchLinearBijection\(4, 4\).*drops nothing"),
        (lambda: ffn.Slice(4, 2, inverse_density="conditional", context_features=0),
         r"Slice: context_features must be a positive int, got 0"),
        (lambda: ConditionalNormal(2, True), r"ConditionalNormal: context_features must be a positive int"),
        (lambda: ConditionalNormal(2, 3, hidden=0), r"ConditionalNormal: hidden must be a positive int"),
    ],
)
def test_bad_context_options(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_conditional_base_checks_its_context() -> None:
    base = ConditionalNormal((2, 2), K)
    z = torch.randn(5, 2, 2)
    assert base.log_prob(z, torch.randn(5, K)).shape == (5,)
    assert base.sample(5, torch.randn(5, K)).shape == (5, 2, 2)
    with pytest.raises(ValueError, match=r"ConditionalNormal\(.*\): needs a context of shape \(5, 3\)"):
        base.log_prob(z)
    with pytest.raises(ValueError, match=r"expected a context of shape \(4, 3\), got \(5, 3\)"):
        base.sample(4, torch.randn(5, K))
    # At initialisation (last layer zero) it is N(0, I) for every context.
    lp = base.log_prob(z, torch.randn(5, K))
    torch.testing.assert_close(lp, -0.5 * z.flatten(1).square().sum(1) - 2 * math.log(2 * math.pi))


def test_conditional_log_prob_traces_without_graph_breaks() -> None:
    flow = _conditional_2d_flow().float()
    with ffn.validation(False):
        explanation = torch._dynamo.explain(flow.log_prob)(torch.randn(8, 2), torch.randn(8, K))
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_an_inverse_density_written_without_context_keeps_working() -> None:
    """A user's InverseDensity with the context-free ``params(self, kept)`` (as before contexts)."""
    from survae_flowify.distributions import InverseDensity

    class Shifted(InverseDensity):
        def params(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return kept[:, :1], kept.new_zeros(())

    density = Shifted((1,))
    kept, d = torch.randn(4, 2), torch.randn(4, 1)
    want = torch.distributions.Normal(kept[:, :1], 1.0).log_prob(d).sum(1)
    torch.testing.assert_close(density.log_prob(d, kept), want)
    torch.testing.assert_close(density.draw(kept, mean=True), kept[:, :1])
