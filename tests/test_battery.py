"""The shared battery: every public transform (tests/cases) through the same checks."""

from __future__ import annotations

import io
import re

import pytest
import torch

import survae_flowify as ffn
from survae_flowify import noise_off
from survae_flowify.testing import (
    check_inverse,
    check_log_det,
    check_right_inverse,
    perturb_parameters,
)
from tests.cases import ALL
from tests.oracles import linear_gaussian_log_prob

NAMES = sorted(ALL)
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 2e-4, torch.float64: 1e-9}
WITH_PARAMETERS = [n for n in NAMES if len(list(ALL[n].make().parameters()))]


def _known(shape: tuple[int | None, ...] | None) -> bool:
    return shape is not None and all(s is not None for s in shape)


def build(name: str, dtype: torch.dtype = torch.float64) -> ffn.Transform:
    torch.manual_seed(0)
    t = ALL[name].make().to(dtype)
    return perturb_parameters(t, scale=0.3, seed=1)


def ctx(name: str, batch: int, dtype: torch.dtype = torch.float64) -> torch.Tensor | None:
    """The case's fixed context for ``batch`` samples (``None`` for an unconditional case)."""
    return ALL[name].context(batch, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtype(name: str, dtype: torch.dtype) -> None:
    t = build(name, dtype)
    x, c = ALL[name].input(5, dtype), ctx(name, 5, dtype)
    z, contribution = t(x, c)
    assert contribution.shape == (5,)
    assert contribution.dtype == dtype and z.dtype == dtype
    assert torch.isfinite(contribution).all() and torch.isfinite(z).all()
    if t.out_shape is not None:
        assert all(e is None or e == g for e, g in zip(t.out_shape, z.shape[1:], strict=True))
    x_back = t.inverse(z, c)
    assert x_back.shape == x.shape and x_back.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_inverse_conditions(name: str, dtype: torch.dtype) -> None:
    t = build(name, dtype)
    x, c = ALL[name].input(6, dtype), ctx(name, 6, dtype)
    tol = 10 * TOL[dtype]
    if not t.stochastic_inverse:
        check_inverse(t, x, context=c, atol=tol, rtol=tol)
    if not t.stochastic_forward:
        z, _ = t(x, c)
        check_right_inverse(t, z, context=c, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", [n for n in NAMES if ALL[n].log_det])
def test_contribution_matches_autograd_jacobian(name: str) -> None:
    t = build(name)
    check_log_det(t, ALL[name].input(4, torch.float64), context=ctx(name, 4), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", [n for n in NAMES if ALL[n].gradcheck])
def test_gradcheck(name: str) -> None:
    t = build(name)
    x = ALL[name].input(2, torch.float64).requires_grad_()
    c = ctx(name, 2)
    inputs = (x,) if c is None else (x, c.requires_grad_())  # a context gets gradients too

    def f(inp: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(3)  # the same noise on every evaluation
        return t(inp, context)

    assert torch.autograd.gradcheck(f, inputs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_names_the_layer(name: str) -> None:
    t = build(name)
    x, c = ALL[name].input(3, torch.float64), ctx(name, 3)
    entry = t
    while isinstance(entry, ffn.Sequential):
        entry = entry[0]
    label = re.escape(type(entry).__name__)
    bad = x.clone()
    bad.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=label + r".*NaN"):
        t(bad, c)
    if t.in_shape is not None:
        with pytest.raises(ValueError, match=label + r".*expected x of shape"):
            t(torch.randn(3, *[s + 1 for s in x.shape[1:]], dtype=torch.float64), c)
        with pytest.raises(ValueError, match=label + r".*expected x of shape"):
            t(x[0], c)


@pytest.mark.parametrize("name", [n for n in NAMES if ALL[n].context_features is not None])
def test_missing_or_misshapen_context_names_the_expected_shape(name: str) -> None:
    """A conditional case without its context, or with one of the wrong size or batch, raises a
    ValueError naming the conditional layer and the ``(B, c)`` shape it expects, both ways."""
    t = build(name)
    k = ALL[name].context_features
    x = ALL[name].input(3, torch.float64)
    z, _ = t(x, ctx(name, 3))
    shape = re.escape(f"({3}, {k})")
    owners = "|".join(sorted({type(m).__name__ for m in t.modules()
                              if getattr(m, "context_features", None) is not None}))
    for wrong in (None, torch.randn(3, k + 1, dtype=torch.float64),
                  torch.randn(2, k, dtype=torch.float64), torch.randn(3, dtype=torch.float64)):
        with pytest.raises(ValueError, match=rf"^({owners})\b.*context of shape " + shape):
            t(x, wrong)
        with pytest.raises(ValueError, match=rf"^({owners})\b.*context of shape " + shape):
            t.inverse(z, wrong)


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name: str) -> None:
    t = build(name)
    buffer = io.BytesIO()
    torch.save(t, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x, c = ALL[name].input(4, torch.float64), ctx(name, 4)
    torch.manual_seed(7)
    z1, c1 = t(x, c)
    torch.manual_seed(7)
    z2, c2 = loaded(x, c)
    assert torch.equal(z1, z2) and torch.equal(c1, c2)


@pytest.mark.parametrize("name", [n for n in NAMES if ALL[n].linear_gaussian])
def test_linear_gaussian_closed_form(name: str) -> None:
    t = build(name)
    flow = ffn.Flow(ffn.StandardNormal(*t.out_shape), t).double()
    torch.manual_seed(11)
    with torch.no_grad():
        x = flow.sample(5)
    exact = linear_gaussian_log_prob(flow, x)
    with torch.no_grad():
        if flow.exact:
            torch.testing.assert_close(flow.log_prob(x), exact, atol=1e-8, rtol=0)
            flow.eval()  # the eval fast paths (cached dense matrices) against the oracle too
            torch.testing.assert_close(flow.log_prob(x), exact, atol=1e-8, rtol=0)
            torch.testing.assert_close(flow.log_prob(x), exact, atol=1e-8, rtol=0)  # warm cache
        else:
            elbo = torch.stack([flow.log_prob(x) for _ in range(200)]).mean(0)
            assert (elbo < exact).all(), (elbo, exact)
            # One IW estimate is right-skewed: with noise narrower than the posterior its weights
            # have heavy tails and a rare large weight lifts it above log p(x) (its expectation
            # stays below). The median of independent estimates is robust to those spikes.
            iw = torch.stack([flow.log_prob(x, num_samples=25_000, chunk_size=25_000)
                              for _ in range(5)]).median(0).values
            assert (iw <= exact + 0.03).all() and (exact - iw).max() < 0.05, (iw, exact)


def _flow(name: str, t: ffn.Transform) -> ffn.Flow:
    """The case over a standard-normal base, or a (perturbed) conditional base when it is
    conditional: the conditional base flow of the battery."""
    k = ALL[name].context_features
    if k is None:
        return ffn.Flow(ffn.StandardNormal(*t.out_shape), t).double()
    base = perturb_parameters(ffn.ConditionalNormal(tuple(t.out_shape), k, hidden=8), seed=2)
    return ffn.Flow(base, t).double()


@pytest.mark.parametrize("name", [n for n in NAMES if ALL[n].context_features is not None
                                  and _known(ALL[n].make().out_shape)])
def test_conditional_flow_samples_and_densities(name: str) -> None:
    """Over a conditional base: ``sample_and_log_prob`` (exact flows) equals ``log_prob`` of its
    samples at their contexts; the log-density changes with the context."""
    flow = _flow(name, build(name))
    x = ALL[name].input(4, torch.float64)
    c = ctx(name, 4)
    with torch.no_grad():
        other = ALL[name].context(4, torch.float64, seed=9)
        with noise_off():
            assert (flow.log_prob(x, c) - flow.log_prob(x, other)).abs().max() > 1e-6
        if flow.exact:
            torch.manual_seed(4)
            samples, log_p = flow.sample_and_log_prob(4, c)
            torch.testing.assert_close(log_p, flow.log_prob(samples, c), atol=1e-8, rtol=1e-8)
        else:
            assert flow.sample(4, c).shape == x.shape


def _seeded(call, seed: int = 5):
    """``call()`` with the global generator seeded: the same noise on every evaluation."""
    torch.manual_seed(seed)
    return call()


def _mean_inverse(t: ffn.Transform, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    return _seeded(lambda: t.inverse(z, c, mean=True))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_eval_equals_train(name: str, dtype: torch.dtype) -> None:
    """The eval fast paths (dense matrices cached in Linear, Rotation, RqSpline, Gram layers)
    compute what training computes: forward with the same noise, with the noise off, and the
    mean inverse; with and without autograd."""
    t = build(name, dtype)
    x, a = ALL[name].input(5, dtype), ctx(name, 5, dtype)
    tol = TOL[dtype]
    t.train()
    z_ref, c_ref = _seeded(lambda: t(x, a))
    with noise_off():
        z_off_ref, c_off_ref = t(x, a)
    x_ref = _mean_inverse(t, z_ref.detach(), a)
    t.eval()
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            for _ in range(2):  # the second call goes through whatever the first one cached
                z, c = _seeded(lambda: t(x, a))
                torch.testing.assert_close(z, z_ref, atol=tol, rtol=tol)
                torch.testing.assert_close(c, c_ref, atol=tol, rtol=tol)
                with noise_off():
                    z_off, c_off = t(x, a)
                torch.testing.assert_close(z_off, z_off_ref, atol=tol, rtol=tol)
                torch.testing.assert_close(c_off, c_off_ref, atol=tol, rtol=tol)
                torch.testing.assert_close(_mean_inverse(t, z_ref.detach(), a), x_ref, atol=10 * tol,
                                           rtol=10 * tol)


@pytest.mark.parametrize("name", WITH_PARAMETERS)
def test_eval_follows_in_place_parameter_edits(name: str) -> None:
    """Edits through ``p.data`` (hand-written EMA, clipping, ``p.data.copy_``) do not bump the
    tensor's version: a warm eval cache must still see them."""
    t = build(name)
    x, a = ALL[name].input(5, torch.float64), ctx(name, 5)
    t.eval()
    with torch.no_grad():
        z_warm, _ = _seeded(lambda: t(x, a))
        _mean_inverse(t, z_warm, a)
        gen = torch.Generator().manual_seed(2)
        for p in t.parameters():
            p.data.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        z, c = _seeded(lambda: t(x, a))
        x_back = _mean_inverse(t, z_warm, a)
    t.train()  # no cache in training: the reference
    with torch.no_grad():
        z_ref, c_ref = _seeded(lambda: t(x, a))
        x_ref = _mean_inverse(t, z_warm, a)
    torch.testing.assert_close(z, z_ref, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(c, c_ref, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(x_back, x_ref, atol=1e-8, rtol=1e-8)


def _cached_parameters(t: ffn.Transform) -> list[torch.nn.Parameter]:
    """The parameters of the modules that keep an eval cache (``survae_flowify._cache``)."""
    from survae_flowify._cache import ParameterCache

    return [p for m in t.modules() if isinstance(m, ParameterCache) for p in m.parameters(recurse=False)]


CACHED = [n for n in WITH_PARAMETERS if _cached_parameters(ALL[n].make())]


@pytest.mark.parametrize("name", CACHED)
def test_eval_follows_an_edit_of_any_single_cached_parameter(name: str) -> None:
    """A cache keyed on only some of the tensors it is derived from passes the test above (which
    edits them all at once); here each parameter of a caching module is edited alone."""
    t = build(name)
    x, a = ALL[name].input(3, torch.float64), ctx(name, 3)
    gen = torch.Generator().manual_seed(3)
    for i, p in enumerate(_cached_parameters(t)):
        t.eval()
        with torch.no_grad():
            z_warm, _ = _seeded(lambda: t(x, a))
            _mean_inverse(t, z_warm, a)
            p.data.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            z, c = _seeded(lambda: t(x, a))
            x_back = _mean_inverse(t, z_warm, a)
        t.train()
        with torch.no_grad():
            z_ref, c_ref = _seeded(lambda: t(x, a))
            x_ref = _mean_inverse(t, z_warm, a)
        msg = f"parameter {i} of shape {tuple(p.shape)}"
        torch.testing.assert_close(z, z_ref, atol=1e-9, rtol=1e-9, msg=msg)
        torch.testing.assert_close(c, c_ref, atol=1e-9, rtol=1e-9, msg=msg)
        torch.testing.assert_close(x_back, x_ref, atol=1e-8, rtol=1e-8, msg=msg)


@pytest.mark.parametrize("name", WITH_PARAMETERS)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    """A log-likelihood backward (standard-normal base) reaches every parameter: a parameter
    without a gradient forces DDP's ``find_unused_parameters`` and is dead weight."""
    t = build(name)
    x = ALL[name].input(8, torch.float64)
    z, contribution = t(x, ctx(name, 8))
    log_p = -0.5 * z.flatten(1).square().sum(1) + contribution
    log_p.sum().backward()
    dead = [n for n, p in t.named_parameters() if p.grad is None or not bool(p.grad.abs().max() > 0)]
    assert not dead, f"{name}: no gradient for {dead}"


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch(name: str) -> None:
    """B = 0: empty outputs and ``(0,)`` contributions in both directions, no raw torch error
    (a conditional case with a ``(0, c)`` context)."""
    t = build(name)
    x, c = ALL[name].input(0, torch.float64), ctx(name, 0)
    z, contribution = t(x, c)
    assert contribution.shape == (0,) and z.shape[0] == 0
    if t.out_shape is not None:
        assert all(e is None or e == g for e, g in zip(t.out_shape, z.shape[1:], strict=True))
    for mean in (False, True):
        assert t.inverse(z, c, mean=mean).shape == x.shape


@pytest.mark.parametrize("name", [n for n in NAMES if _known(ALL[n].make().out_shape)])
def test_empty_batch_through_flow(name: str) -> None:
    """B = 0 through ``Flow``: ELBO, importance-weighted bound and breakdown (a conditional case
    over a conditional base)."""
    t = build(name)
    flow = _flow(name, t)
    x, c = ALL[name].input(0, torch.float64), ctx(name, 0)
    with torch.no_grad():
        assert flow.log_prob(x, c).shape == (0,)
        assert flow.log_prob(x, c, num_samples=3).shape == (0,)
    flow.breakdown(x, c)
