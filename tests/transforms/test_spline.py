"""RqSpline and its shared-knot kernel, against nflows' spline function (the oracle), autograd
derivatives and numerical integration of a 1-D density."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

import survae_flowify as ffn
from survae_flowify.testing import check_inverse, check_log_det, perturb_parameters
from survae_flowify.transforms._rq_kernel import _locate, rq_spline, rq_tables

# Every test here runs with the C kernel and with the PyTorch kernel (tests/transforms/conftest.py).
pytestmark = pytest.mark.usefixtures("spline_kernel")

TOL = {torch.float64: 1e-11, torch.float32: 2e-5}


def _params(num_bins: int, dtype: torch.dtype, *, scale: float = 1.5, seed: int = 0) -> list[torch.Tensor]:
    """Random unconstrained parameters far from the identity initialisation."""
    gen = torch.Generator().manual_seed(seed)
    sizes = (num_bins, num_bins, num_bins - 1)
    return [(scale * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype) for n in sizes]


def _inputs(bound: float, dtype: torch.dtype, knots: torch.Tensor | None = None) -> torch.Tensor:
    """Inside and outside ``[−B, B]``: random points, both bounds, far tails, and the knots."""
    gen = torch.Generator().manual_seed(1)
    parts = [
        (torch.rand(500, generator=gen, dtype=torch.float64) * 2.6 - 1.3) * bound,
        torch.tensor([-bound, bound, 0.0, -50 * bound, 1e4]),
    ]
    if knots is not None:
        parts.append(knots.double())
    return torch.cat(parts).to(dtype)


def _nflows(x: torch.Tensor, params: list[torch.Tensor], *, inverse: bool, bound: float):
    shape = (*x.shape, -1)
    w, h, d = (p.expand(shape) for p in params)
    return unconstrained_rational_quadratic_spline(
        x, w, h, d, inverse=inverse, tails="linear", tail_bound=bound
    )


def _close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    torch.testing.assert_close(got, want, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize(("num_bins", "bound"), [(10, 2.0), (1, 1.0), (3, 0.5), (37, 4.0)])
def test_kernel_matches_nflows(num_bins: int, bound: float, inverse: bool) -> None:
    """float64, random parameters; inputs at random, at ±B, far in the tails and at every knot."""
    params = _params(num_bins, torch.float64, seed=num_bins)
    knots = rq_tables(*params, tail_bound=bound, inverse=inverse).knots
    x = _inputs(bound, torch.float64, knots).reshape(-1, 1)  # a (batch, 1) activation
    got_y, got_log = rq_spline(x, *params, inverse=inverse, tail_bound=bound)
    want_y, want_log = _nflows(x, params, inverse=inverse, bound=bound)
    assert num_bins == 1 or want_log.abs().max() > 0.1  # one bin with end slopes 1: identity
    _close(got_y, want_y, torch.float64)
    _close(got_log, want_log, torch.float64)


@pytest.mark.parametrize(("num_bins", "scale"), [(10, 1.5), (50, 4.0)], ids=["K10", "narrow-K50"])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_kernel_float32_is_as_accurate_as_nflows(inverse: bool, num_bins: int, scale: float) -> None:
    """In float32, both implementations against nflows in float64 on the same (rounded)
    inputs and parameters: ours is no worse than nflows' own, also for narrow bins (a peaked
    softmax: widths down to the minimum) at, just above and just below every knot and ±B.
    Near a knot the float32 knots themselves differ from the float64 ones, so the absolute
    error bound holds for the gentle spline only."""
    params = _params(num_bins, torch.float32, scale=scale, seed=7)
    knots = rq_tables(*params, tail_bound=2.0, inverse=inverse).knots
    x = torch.cat([_inputs(2.0, torch.float32), knots.nextafter(knots + 1), knots.nextafter(knots - 1)])
    x = x.reshape(-1, 1)
    ref = _nflows(x.double(), [p.double() for p in params], inverse=inverse, bound=2.0)
    ours = rq_spline(x, *params, inverse=inverse, tail_bound=2.0)
    theirs = _nflows(x, params, inverse=inverse, bound=2.0)
    for got, other, want in zip(ours, theirs, ref, strict=True):
        err = (got.double() - want).abs().max().item()
        assert err <= 2 * (other.double() - want).abs().max().item() + 1e-6
        assert scale > 2 or err < 1e-3


@pytest.mark.parametrize(("inverse", "closed_form"), [(False, True), (False, False), (True, True)],
                         ids=["forward-closed-form", "forward-autograd", "inverse"])
def test_kernel_gradients_match_nflows(inverse: bool, closed_form: bool, spline_kernel: str) -> None:
    """Gradients w.r.t. inputs and all three parameter vectors, of a random linear functional
    of both outputs, equal nflows' (float64): the hand-written backward and autograd's."""
    bound = 2.0
    gen = torch.Generator().manual_seed(5)
    knots = rq_tables(*_params(10, torch.float64, seed=2), tail_bound=bound, inverse=inverse).knots
    x0 = _inputs(bound, torch.float64, knots).reshape(4, -1)  # also exactly at every knot
    weights = torch.randn(2, *x0.shape, generator=gen, dtype=torch.float64)
    if spline_kernel == "native" and closed_form and not inverse:
        # The C kernel sums the knots in its own order (in C, float64), so an interior knot of
        # nflows' may lie one ulp to the other side of its own: g is C¹ there and agrees, but the
        # derivative of log g' jumps, so there only g's gradient is compared.
        weights.view(2, -1)[1, -len(knots) + 1:-1] = 0
    grads = []
    for fn in (
        lambda x, p: rq_spline(x, *p, inverse=inverse, tail_bound=bound, closed_form=closed_form),
        lambda x, p: _nflows(x, p, inverse=inverse, bound=bound),
    ):
        x = x0.clone().requires_grad_()
        params = [p.requires_grad_() for p in _params(10, torch.float64, seed=2)]
        y, log_d = fn(x, params)
        ((weights[0] * y).sum() + (weights[1] * log_d).sum()).backward()
        grads.append([x.grad, *(p.grad for p in params)])
    for got, want in zip(*grads, strict=True):
        assert got.abs().max() > 0
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_kernel_gradcheck() -> None:
    bound = 2.0
    x = _inputs(bound, torch.float64)[:40].reshape(4, 10).requires_grad_()
    params = [p.requires_grad_() for p in _params(6, torch.float64, seed=3)]
    for inverse in (False, True):
        def f(x, w, h, d, inverse=inverse):
            return rq_spline(x, w, h, d, inverse=inverse, tail_bound=bound)

        assert torch.autograd.gradcheck(f, (x, *params))


@pytest.mark.parametrize("seed", range(6))
def test_grid_lookup_equals_binary_search(seed: int) -> None:
    """The O(1) bin lookup (a column of the table, whose bin is ``tables.bins[column]``) agrees
    with torch.searchsorted, also at and next to every knot, for narrow bins (many bins, peaked
    softmax) and both dtypes."""
    dtype = (torch.float32, torch.float64)[seed % 2]
    num_bins = (2, 10, 200, 1000, 50, 7)[seed]
    bound = (0.3, 2.0, 5.0, 1.0, 100.0, 2.0)[seed]
    params = _params(num_bins, dtype, scale=(1.0, 3.0, 8.0, 2.0, 20.0, 0.1)[seed], seed=seed)
    for inverse in (False, True):
        tables = rq_tables(*params, tail_bound=bound, inverse=inverse)
        assert tables.cells > 0
        k = tables.knots
        x = torch.cat([_inputs(bound, dtype), k, k.nextafter(k + 1), k.nextafter(k - 1)])
        want = torch.searchsorted(k, x, right=True)
        assert torch.equal(tables.bins[_locate(x, tables)], want)


def test_fallback_to_binary_search_for_tiny_bins() -> None:
    params = _params(10, torch.float64, seed=4)
    x = _inputs(2.0, torch.float64)
    tables = rq_tables(*params, tail_bound=2.0, inverse=False, min_bin_width=1e-6)
    assert tables.cells == 0
    got = rq_spline(x, *params, tail_bound=2.0, min_bin_width=1e-6)
    shape = (*x.shape, -1)
    want = unconstrained_rational_quadratic_spline(
        x, *(p.expand(shape) for p in params), tails="linear", tail_bound=2.0, min_bin_width=1e-6
    )
    for g, w in zip(got, want, strict=True):
        _close(g, w, torch.float64)


def test_tails_are_exactly_the_identity() -> None:
    params = _params(10, torch.float32, scale=3.0)
    x = torch.tensor([-1e30, -1e6, -2.0001, 2.5, 1e6, 1e30, 2.0]).nextafter(torch.tensor(5.0))
    for inverse in (False, True):
        y, log_d = rq_spline(x, *params, inverse=inverse, tail_bound=2.0)
        assert torch.equal(y, x) and torch.equal(log_d, torch.zeros_like(x))


def test_kernel_rejects_bins_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="num_bins"):
        rq_tables(*_params(10, torch.float64), tail_bound=1.0, inverse=False, min_bin_width=0.2)
    with pytest.raises(ValueError, match="num_bins"):  # the forward, which the C kernel may take
        rq_spline(torch.zeros(3), *_params(10, torch.float32), tail_bound=1.0, min_bin_height=0.2)


def _layer(dtype: torch.dtype = torch.float64, **kwargs) -> ffn.RqSpline:
    layer = ffn.RqSpline(**kwargs).to(dtype)
    return perturb_parameters(layer, scale=1.5, seed=3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_layer_backends_agree(dtype: torch.dtype) -> None:
    fast = _layer(dtype)
    slow = _layer(dtype, backend="nflows")
    x = 1.5 * torch.randn(8, 3, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = x.to(dtype)
    (z1, c1), (z2, c2) = fast(x), slow(x)
    _close(z1, z2, dtype)
    torch.testing.assert_close(c1, c2, atol=100 * TOL[dtype], rtol=TOL[dtype])
    _close(fast.inverse(z1), slow.inverse(z1), dtype)
    assert c1.abs().min() > 0.01  # moved away from the identity


def test_layer_contribution_matches_autograd_and_inverts() -> None:
    layer = _layer()
    x = 1.5 * torch.randn(4, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    check_log_det(layer, x, atol=1e-10, rtol=1e-10)
    check_inverse(layer, x, atol=1e-10, rtol=1e-10)


def test_layer_accepts_a_plain_batch_of_scalars() -> None:
    layer = _layer()
    x = torch.linspace(-3, 3, 9, dtype=torch.float64)
    z, contribution = layer(x)
    want_z, want_log = _nflows(x, list(layer.parameters()), inverse=False, bound=2.0)
    _close(z, want_z.detach(), torch.float64)
    _close(contribution, want_log.detach(), torch.float64)


def _gauss_legendre(breaks: torch.Tensor, pieces: int = 20, order: int = 16):
    """Nodes and weights of composite Gauss–Legendre quadrature on the intervals of ``breaks``."""
    t, w = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(order))
    edges = torch.cat([torch.linspace(a, b, pieces + 1, dtype=torch.float64)[:-1]
                       for a, b in zip(breaks[:-1].tolist(), breaks[1:].tolist(), strict=True)])
    edges = torch.cat([edges, breaks[-1:]])
    half = (edges[1:] - edges[:-1]).unsqueeze(1) / 2
    nodes = (edges[:-1].unsqueeze(1) + half * (t + 1)).flatten()
    return nodes, (half * w).flatten()


def test_one_dimensional_density_integrates_to_one() -> None:
    """``∫ p(x) dx = 1`` for ``Flow(StandardNormal(1), RqSpline())``: composite Gauss–Legendre
    between the knots (the density is smooth inside each bin), ``[−12, 12]`` (the tails beyond
    carry < 1e-30)."""
    layer = _layer()
    flow = ffn.Flow(ffn.StandardNormal(1), layer).double()
    knots = rq_tables(*layer.parameters(), tail_bound=2.0, inverse=False).knots.detach()
    breaks = torch.cat([torch.tensor([-12.0], dtype=torch.float64), knots, torch.tensor([12.0])])
    nodes, weights = _gauss_legendre(breaks.double())
    with torch.no_grad():
        density = flow.log_prob(nodes.unsqueeze(1)).exp()
    assert abs((density * weights).sum().item() - 1.0) < 1e-10
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(nodes).exp()
    assert (density - standard).abs().max() > 0.05  # the spline changed the density


def test_tables_are_reused_only_while_parameters_are_unchanged() -> None:
    layer = _layer()
    x = torch.randn(5, 6, dtype=torch.float64)
    with torch.no_grad():
        z_first, _ = layer(x)
        z_again, _ = layer(x)
        layer.unnormalized_heights.add_(torch.linspace(-1, 1, 10, dtype=torch.float64))
        z_changed, c_changed = layer(x)
    assert torch.equal(z_first, z_again)
    fresh = ffn.RqSpline().double()
    fresh.load_state_dict(layer.state_dict())
    z_want, c_want = fresh(x)  # gradients enabled: computed from scratch
    assert not torch.allclose(z_changed, z_first)
    assert torch.equal(z_changed, z_want.detach()) and torch.equal(c_changed, c_want.detach())
    layer.load_state_dict(_layer().state_dict())
    with torch.no_grad():
        assert torch.equal(layer(x)[0], z_first)


def test_gradients_flow_to_parameters_after_a_no_grad_call() -> None:
    layer = _layer()
    x = torch.randn(5, 6, dtype=torch.float64)
    with torch.no_grad():
        layer(x)
    _, contribution = layer(x)
    contribution.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_parameter_names_and_shapes_are_stable() -> None:
    """Saved models load: the parameter names of nflows' spline function, as before."""
    shapes = {k: tuple(v.shape) for k, v in ffn.RqSpline(num_bins=7).state_dict().items()}
    assert shapes == {
        "unnormalized_widths": (7,),
        "unnormalized_heights": (7,),
        "unnormalized_derivatives": (6,),
    }


def test_identity_at_initialisation() -> None:
    """Up to the float32 rounding of the initial derivative parameter (``softplus⁻¹(0.999)``)."""
    x = torch.linspace(-3, 3, 31).reshape(1, -1)
    z, contribution = ffn.RqSpline()(x)
    torch.testing.assert_close(z, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(contribution, torch.zeros(1), atol=1e-5, rtol=0)


def test_pickle_drops_the_cache_and_old_pickles_load() -> None:
    layer = _layer().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    with torch.no_grad():
        want = layer(x)
        layer.inverse(want[0])  # the inverse's tables are cached with either kernel
    assert layer.__dict__.get("_derived_cache")
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert "_derived_cache" not in loaded.__dict__
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], want[0])
    old_state = {k: v for k, v in layer.__dict__.items() if k not in ("backend", "_derived_cache")}
    old_state["_cache"] = {}  # the cache attribute of older versions
    old = ffn.RqSpline.__new__(ffn.RqSpline)
    old.__setstate__(old_state)
    with torch.no_grad():
        assert torch.equal(old(x)[0], want[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_bins": 0}, "num_bins"),
        ({"num_bins": 2.5}, "num_bins"),
        ({"num_bins": True}, "num_bins"),
        ({"tail_bound": 0}, "tail_bound"),
        ({"tail_bound": "2"}, "tail_bound"),
        ({"num_bins": 1001}, "num_bins"),
        ({"tail_bound": -1.0}, "tail_bound"),
        ({"tail_bound": math.inf}, "tail_bound"),
        ({"backend": "cuda"}, "backend"),
    ],
)
def test_bad_configuration_names_the_layer(kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=rf"RqSpline: {message}"):
        ffn.RqSpline(**kwargs)


def test_no_graph_breaks_under_dynamo() -> None:
    """No boolean-mask indexing or data-dependent branches: one graph, forward and inverse."""
    layer = _layer(torch.float32)
    x = torch.randn(16, 8)

    def both(x: torch.Tensor) -> torch.Tensor:
        z, contribution = layer(x)
        return layer.inverse(z).sum() + contribution.sum()

    torch._dynamo.reset()
    with ffn.validation(False):
        explanation = torch._dynamo.explain(both)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "strided"])
def test_spline_follows_the_input_memory_layout(layout: str) -> None:
    """A permuted (channels-last, transposed) input is worked in memory order, without a copy:
    the values and gradients are those of the contiguous input, and the output keeps the layout."""
    spline = perturb_parameters(ffn.RqSpline(), scale=0.5)
    base = 2 * torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = {"channels_last": base.to(memory_format=torch.channels_last),
         "transposed": base.transpose(1, 3), "strided": base[:, :, ::2]}[layout]
    spline = spline.double()
    xg, xc = x.clone().requires_grad_(), x.contiguous().requires_grad_()
    z, log_d = spline(xg)
    zc, log_dc = spline(xc)
    torch.testing.assert_close(z, zc, rtol=0, atol=0)
    torch.testing.assert_close(log_d, log_dc, rtol=1e-14, atol=1e-12)
    (z.square().sum() + log_d.sum()).backward()
    (zc.square().sum() + log_dc.sum()).backward()
    torch.testing.assert_close(xg.grad, xc.grad, rtol=1e-14, atol=1e-12)
    if layout != "strided":  # a permutation of a contiguous tensor: same strides out
        assert z.stride() == x.stride()
