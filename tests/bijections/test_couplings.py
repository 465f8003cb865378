"""AffineCoupling and RqCoupling: split, log-det against autograd, inverse, context, identity start."""

from __future__ import annotations

import math

import pytest
import torch

import survae_flowify as ffn
from survae_flowify.bijections import AffineCoupling, RqCoupling
from survae_flowify.testing import perturb_parameters


def log_abs_det_autograd(t: ffn.Transform, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """``log|det ∂z/∂x|`` per sample from the autograd Jacobian (not from the layer's contribution)."""
    out = []
    for i in range(x.shape[0]):
        ci = None if context is None else context[i:i + 1]

        def f(v: torch.Tensor, i: int = i, ci: torch.Tensor | None = ci) -> torch.Tensor:
            return t(v.view(1, *x.shape[1:]), ci)[0].flatten()

        jac = torch.autograd.functional.jacobian(f, x[i].flatten())
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


def _build(make, scale: float = 1.5):
    torch.manual_seed(0)
    return perturb_parameters(make().double(), scale=scale, seed=1)


LAYERS = {
    "affine_vector": (lambda: AffineCoupling(5, hidden=16), (5,), None),
    "rq_vector": (lambda: RqCoupling(5, num_bins=6, tail_bound=2.0, hidden=16), (5,), None),
    "affine_vector_context": (lambda: AffineCoupling(4, hidden=16, context_features=3), (4,), 3),
    "rq_vector_context": (lambda: RqCoupling(7, hidden=(16, 8, 16), context_features=3), (7,), 3),
    "affine_image": (lambda: AffineCoupling((3, 3, 3), hidden=8), (3, 3, 3), None),
    "rq_image_context": (lambda: RqCoupling((2, 3, 3), hidden=8, context_features=2), (2, 3, 3), 2),
}


def _data(shape, context_features, batch: int = 4):
    g = torch.Generator().manual_seed(2)
    x = 2.0 * torch.randn(batch, *shape, generator=g, dtype=torch.float64)
    c = None if context_features is None else torch.randn(batch, context_features, generator=g,
                                                            dtype=torch.float64)
    return x, c


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_log_det_matches_autograd_and_inverse(name: str) -> None:
    make, shape, cf = LAYERS[name]
    t = _build(make)
    x, c = _data(shape, cf)
    z, contribution = t(x, c)
    torch.testing.assert_close(contribution, log_abs_det_autograd(t, x, c), atol=1e-9, rtol=1e-9)
    assert contribution.abs().min() > 1e-3  # moved off the identity: the check is not 0 == 0
    torch.testing.assert_close(t.inverse(z, c), x, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("make", [lambda: AffineCoupling(5), lambda: RqCoupling(5)], ids=["affine", "rq"])
def test_odd_split_passes_the_first_half(make) -> None:
    t = _build(make)
    x = _data((5,), None)[0] / 4  # inside the spline's [−3, 3]: no entry in the identity tails
    z, _ = t(x)
    assert torch.equal(z[:, :2], x[:, :2])  # ⌊5/2⌋ = 2 pass
    assert (z[:, 2:] - x[:, 2:]).abs().min() > 0  # the other ⌈5/2⌉ = 3 are transformed
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert not torch.allclose(t(x2)[0][:, 2:], z[:, 2:])  # ... with parameters from x_a


@pytest.mark.parametrize("make", [lambda: AffineCoupling((4, 2, 2), context_features=3),
                                  lambda: RqCoupling(4, context_features=3)], ids=["affine_image", "rq"])
def test_starts_as_the_identity(make) -> None:
    t = make().double()
    x, c = _data(t.shape, 3)
    z, contribution = t(x, c)
    torch.testing.assert_close(z, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(contribution, torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["affine_vector_context", "rq_image_context"])
def test_context_matters_and_is_checked(name: str) -> None:
    make, shape, cf = LAYERS[name]
    t = _build(make)
    x, c = _data(shape, cf)
    z1, v1 = t(x, c)
    z2, v2 = t(x, c + 1.0)
    assert not torch.allclose(z1, z2) and not torch.allclose(v1, v2)
    label = type(t).__name__
    with pytest.raises(ValueError, match=label + r".*needs a context of shape \(4, " + str(cf)):
        t(x)
    with pytest.raises(ValueError, match=label + r".*expected a context of shape"):
        t(x, c[:, :1])
    with pytest.raises(ValueError, match=label + r".*needs a context"):
        t.inverse(z1)


@pytest.mark.parametrize("coupling", ["affine", "rq"])
@pytest.mark.parametrize("context", [None, -1.0, 2.0])
def test_two_dimensional_density_integrates_to_one(coupling: str, context: float | None) -> None:
    """A standard-normal base pushed through the coupling, on a grid of [−12, 12]²: total mass 1."""
    cf = None if context is None else 1
    make = {"affine": lambda: AffineCoupling(2, hidden=16, context_features=cf),
            "rq": lambda: RqCoupling(2, hidden=16, context_features=cf)}[coupling]
    t = _build(make, scale=0.5)
    n, half = 601, 12.0
    axis = torch.linspace(-half, half, n, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    c = None if context is None else torch.full((grid.shape[0], 1), context, dtype=torch.float64)
    with torch.no_grad():
        z, contribution = t(grid, c)
    log_p = -0.5 * z.square().sum(1) - math.log(2 * math.pi) + contribution
    mass = log_p.exp().sum() * (2 * half / (n - 1)) ** 2
    assert math.isclose(mass.item(), 1.0, abs_tol=2e-3), mass


def test_conv_net_sees_any_image_size() -> None:
    t = _build(lambda: RqCoupling((2, None, None), hidden=8))
    for h, w in [(3, 5), (6, 2)]:
        x = torch.randn(2, 2, h, w, dtype=torch.float64)
        z, v = t(x)
        assert z.shape == x.shape and v.shape == (2,)
        torch.testing.assert_close(t.inverse(z), x, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(shape=1), ValueError, r"RqCoupling: dimension 1 must have at least 2"),
    (dict(shape=(4, 3)), ValueError, r"RqCoupling: shape must be \(D,\) or \(C, H, W\)"),
    (dict(shape=(None, 3, 3)), ValueError, r"RqCoupling: shape must be"),
    (dict(shape=4, num_bins=0), ValueError, r"RqCoupling.*num_bins"),
    (dict(shape=4, num_bins=2000), ValueError, r"RqCoupling.*num_bins"),
    (dict(shape=4, tail_bound=-1.0), ValueError, r"RqCoupling.*tail_bound"),
    (dict(shape=4, hidden=0), ValueError, r"RqCoupling.*hidden"),
    (dict(shape=4, hidden="64"), TypeError, r"RqCoupling: hidden must be"),
    (dict(shape=4, hidden=()), TypeError, r"RqCoupling: hidden must be"),
    (dict(shape=4, context_features=0), ValueError, r"RqCoupling.*context_features"),
])
def test_bad_arguments_are_named(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        RqCoupling(**kwargs)


def test_affine_bad_shape_names_the_layer() -> None:
    with pytest.raises(ValueError, match=r"AffineCoupling: dimension 1"):
        AffineCoupling((1, 4, 4))
