"""The per-entry spline kernel against nflows' ``unconstrained_rational_quadratic_spline`` (the oracle)."""

from __future__ import annotations

import pytest
import torch
from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

from survae_flowify.transforms._rq_elementwise import identity_derivative_logit, rq_elementwise

BOUND = 3.0
K = 8


def _parameters(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = 1.5 * torch.randn(*shape, K, generator=g, dtype=dtype)
    h = 1.5 * torch.randn(*shape, K, generator=g, dtype=dtype)
    d = 1.5 * torch.randn(*shape, K - 1, generator=g, dtype=dtype)
    return w, h, d


def _inputs(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Normal entries (some beyond ±B) plus entries exactly on the bounds and far outside."""
    g = torch.Generator().manual_seed(1)
    x = 2.0 * torch.randn(*shape, generator=g, dtype=dtype)
    flat = x.view(-1)
    flat[:6] = torch.tensor([-BOUND, BOUND, -BOUND - 1e-3, BOUND + 1e-3, -50.0, 50.0], dtype=dtype)
    return x


def _oracle(x, w, h, d, *, inverse):
    return unconstrained_rational_quadratic_spline(
        x, w, h, d, inverse=inverse, tails="linear", tail_bound=BOUND
    )


TOL = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.float64: dict(atol=1e-11, rtol=1e-11)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_matches_nflows(dtype: torch.dtype, inverse: bool) -> None:
    shape = (64, 7)
    w, h, d = _parameters(shape, dtype)
    x = _inputs(shape, dtype)
    out, log_det = rq_elementwise(x, w, h, d, inverse=inverse, tail_bound=BOUND)
    ref_out, ref_log_det = _oracle(x, w, h, d, inverse=inverse)
    torch.testing.assert_close(out, ref_out, **TOL[dtype])
    torch.testing.assert_close(log_det, ref_log_det, **TOL[dtype])
    outside = x.abs() > BOUND
    assert outside.any() and torch.equal(out[outside], x[outside])
    assert (log_det[outside] == 0).all()


@pytest.mark.parametrize("inverse", [False, True], ids=["forward", "inverse"])
def test_gradients_match_nflows(inverse: bool) -> None:
    """Autograd through the kernel and through nflows agree for inputs and every parameter."""
    shape = (16, 5)
    dtype = torch.float64
    leaves = [t.requires_grad_() for t in (_inputs(shape, dtype), *_parameters(shape, dtype, seed=3))]
    g = torch.Generator().manual_seed(5)
    weights = [torch.randn(shape, generator=g, dtype=dtype) for _ in range(2)]

    def loss(fn):
        out, log_det = fn(*leaves)
        return (weights[0] * out + weights[1] * log_det).sum()

    ours = torch.autograd.grad(
        loss(lambda *a: rq_elementwise(*a, inverse=inverse, tail_bound=BOUND)), leaves
    )
    ref = torch.autograd.grad(loss(lambda *a: _oracle(*a, inverse=inverse)), leaves)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-9)


def test_inverse_inverts_and_log_dets_cancel() -> None:
    w, h, d = _parameters((32, 3), torch.float64, seed=7)
    x = _inputs((32, 3), torch.float64)
    y, log_det = rq_elementwise(x, w, h, d, tail_bound=BOUND)
    x_back, inv_log_det = rq_elementwise(y, w, h, d, inverse=True, tail_bound=BOUND)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(inv_log_det, -log_det, atol=1e-10, rtol=1e-10)


def test_log_det_is_the_derivative() -> None:
    """``log g'`` against the elementwise derivative from autograd (not from the kernel's formula)."""
    w, h, d = _parameters((40,), torch.float64, seed=9)
    x = _inputs((40,), torch.float64).requires_grad_()
    y, log_det = rq_elementwise(x, w, h, d, tail_bound=BOUND)
    (dy,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(log_det, dy.log(), atol=1e-10, rtol=1e-10)


def test_identity_at_the_identity_logits() -> None:
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    zeros = torch.zeros(101, K, dtype=torch.float64)
    d = torch.full((101, K - 1), identity_derivative_logit(), dtype=torch.float64)
    y, log_det = rq_elementwise(x, zeros, zeros, d, tail_bound=BOUND)
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(log_det, torch.zeros_like(x), atol=1e-12, rtol=0)


def test_too_many_bins_is_a_clear_error() -> None:
    x = torch.zeros(2)
    w = torch.zeros(2, 2000)
    with pytest.raises(ValueError, match="rq_elementwise: 2000 bins"):
        rq_elementwise(x, w, w, torch.zeros(2, 1999))
