"""The shared-knot spline's hand-written backward (``_rq_kernel._SharedSpline``): against
finite differences (gradcheck), nflows' autograd on inputs spanning several CPU chunks, and its
refusal of second derivatives."""

from __future__ import annotations

import pytest
import torch
from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

import survae_flowify as ffn
from survae_flowify.testing import perturb_parameters
from survae_flowify.transforms import _rq_kernel
from survae_flowify.transforms._rq_kernel import _SharedSpline, rq_spline, rq_tables

# Every test here runs with the C kernel and with the PyTorch kernel (tests/transforms/conftest.py).
pytestmark = pytest.mark.usefixtures("spline_kernel")


def _params(num_bins: int, *, seed: int, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sizes = (num_bins, num_bins, num_bins - 1)
    return [(1.5 * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype) for n in sizes]


def _columns(table: torch.Tensor, tables: _rq_kernel.RqTables) -> torch.Tensor:
    """``table`` (one column per bin) spread to the columns the grid lookup indexes."""
    return table.gather(1, tables.bins.expand(table.shape[0], -1))


def _inputs(n: int, bound: float, *, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Uniform on ``[−1.3B, 1.3B]``: about a quarter of the entries in the tails."""
    gen = torch.Generator().manual_seed(seed)
    return ((torch.rand(n, generator=gen, dtype=torch.float64) * 2.6 - 1.3) * bound).to(dtype)


@pytest.mark.parametrize(("num_bins", "bound"), [(6, 2.0), (1, 1.0), (11, 0.7)])
def test_closed_form_backward_passes_gradcheck_in_every_table_entry(num_bins: int, bound: float) -> None:
    """Finite differences of both outputs w.r.t. the inputs and each of the six per-bin
    coefficients of the table (``x_k, a₀, a₁, b₁, b₂, c₂, y_k``) directly, where no autograd
    graph of the ``O(K)`` table could hide a wrong row (the spread of the ``(7, K+2)`` table to
    the lookup's columns is a gather, whose backward is autograd's)."""
    params = _params(num_bins, seed=num_bins)
    tables = rq_tables(*params, tail_bound=bound, inverse=False)
    x = _inputs(60, bound, seed=1).requires_grad_()
    table = tables.coefficients.detach().clone().requires_grad_()

    def f(x: torch.Tensor, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _SharedSpline.apply(x, _columns(table, tables), tables)

    assert torch.autograd.gradcheck(f, (x, table), atol=1e-8, rtol=1e-6)


def test_table_gradient_is_not_trivially_zero() -> None:
    """The gradcheck above sees real work: every interior bin's seven entries get a gradient."""
    params = _params(6, seed=2)
    tables = rq_tables(*params, tail_bound=2.0, inverse=False)
    x = torch.linspace(-1.99, 1.99, 400, dtype=torch.float64)
    table = tables.coefficients.detach().clone().requires_grad_()
    out, log_det = _SharedSpline.apply(x, _columns(table, tables), tables)
    (out.sum() + log_det.sum()).backward()
    assert (table.grad[:, 1:-1].abs() > 1e-6).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_many_chunks_match_nflows(dtype: torch.dtype) -> None:
    """An input of a few CPU chunks plus a ragged end: values and gradients w.r.t. the input
    and all parameters equal nflows' (each chunk finds its own bins and recomputes its terms in
    the backward; a mix-up between chunks would show here)."""
    chunk = _rq_kernel._CHUNK_BYTES // torch.empty((), dtype=dtype).element_size()
    n = 3 * chunk + 17
    x0 = _inputs(n, 2.0, seed=3, dtype=dtype)
    gen = torch.Generator().manual_seed(4)
    weights = torch.randn(2, n, generator=gen, dtype=torch.float64).to(dtype)
    results = []
    for ours in (True, False):
        # nflows in float64 on the same (rounded) numbers: the oracle, not nflows' float32 rounding.
        cast = dtype if ours else torch.float64
        x = x0.detach().to(cast).requires_grad_()
        params = [p.detach().to(cast).requires_grad_() for p in _params(10, seed=5, dtype=dtype)]
        if ours:
            y, log_d = rq_spline(x, *params, tail_bound=2.0)
        else:
            shape = (n, -1)
            y, log_d = unconstrained_rational_quadratic_spline(
                x, *(p.expand(shape) for p in params), tails="linear", tail_bound=2.0)
        ((weights[0].to(cast) * y).sum() + (weights[1].to(cast) * log_d).sum()).backward()
        results.append([t.double() for t in (y, log_d, x.grad, *(p.grad for p in params))])
    # float32: to its rounding, relative to each tensor's largest entry (entries of a gradient
    # sum terms of both signs, so their own relative error is not bounded).
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=tol * max(1.0, want.abs().max().item()), rtol=tol)


def test_second_derivative_is_refused_with_the_way_out() -> None:
    layer = perturb_parameters(ffn.RqSpline().double(), scale=1.0, seed=0)
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    z, contribution = layer(x)
    (grad,) = torch.autograd.grad(contribution.sum() + z.sum(), x, create_graph=False)
    assert grad.abs().sum() > 0  # first derivatives work
    z, contribution = layer(x)
    with pytest.raises(RuntimeError, match=r"RqSpline.*backend='autograd'"):
        torch.autograd.grad(contribution.sum(), x, create_graph=True)


def test_autograd_backend_has_second_derivatives() -> None:
    """``backend="autograd"``: the same function, differentiable twice (gradgradcheck), and
    equal to the fast backend."""
    fast = perturb_parameters(ffn.RqSpline(num_bins=5).double(), scale=1.0, seed=1)
    slow = ffn.RqSpline(num_bins=5, backend="autograd").double()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1.5
    for a, b in zip(fast(x), slow(x), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    x.requires_grad_()

    def f(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return slow(x)

    assert torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.parametrize(("num_bins", "mins"), [(1, (1e-3, 1e-3, 1e-3)), (2, (0.1, 0.2, 0.05)),
                                                (7, (1e-3, 1e-3, 1e-3)), (7, (0.02, 0.05, 0.3))])
def test_table_passes_gradcheck(num_bins: int, mins: tuple[float, float, float]) -> None:
    """The derivative of the ``O(K)`` forward table (softmax, cumulative sums, softplus and the
    seven coefficients) against finite differences, with different minimal widths, heights and
    derivatives (each scales its own rows), and one bin (no inner knot)."""
    params = [(0.5 * p).requires_grad_() for p in _params(num_bins, seed=num_bins + 10)]

    def f(w: torch.Tensor, h: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return rq_tables(w, h, d, tail_bound=1.7, inverse=False, min_bin_width=mins[0],
                         min_bin_height=mins[1], min_derivative=mins[2]).coefficients

    assert torch.autograd.gradcheck(f, tuple(params), atol=1e-8, rtol=1e-6)


def test_backward_keeps_six_bytes_per_float32_entry() -> None:
    """What the fast kernel saves for its backward, per entry: the input (float32, 4 bytes) and
    its grid column as int16 (2 bytes), nothing else of the entries' size (the table is
    ``O(K + M)``). An ``int64`` bin, as before, would make it 12."""
    layer = perturb_parameters(ffn.RqSpline(), scale=1.0, seed=0)
    x = torch.randn(64, 1000, requires_grad=True)  # 64,000 entries: more than 7·(2M + 4)
    per_entry = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.numel() == x.numel():  # per entry (the O(K + M) tables are smaller here)
            per_entry.append(t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ffn.validation(False):
        layer(x)
    assert sum(per_entry) == 6
