"""MaskedAutoregressive: triangular Jacobian (from autograd), log-det, inverse in D passes, context."""

from __future__ import annotations

import pytest
import torch

from survae_flowify.bijections import MaskedAutoregressive
from survae_flowify.testing import perturb_parameters
from tests.bijections.test_couplings import log_abs_det_autograd

D = 5
KINDS = ["affine", "spline"]


def _build(transform: str, context_features: int | None = None, **kwargs) -> MaskedAutoregressive:
    torch.manual_seed(0)
    # tail_bound 5: the test inputs lie inside the splines, where every parameter matters
    t = MaskedAutoregressive(D, transform=transform, hidden=16, context_features=context_features,
                             tail_bound=5.0, **kwargs)
    return perturb_parameters(t.double(), scale=1.5, seed=1)


def _data(context_features: int | None, batch: int = 4):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, D, generator=g, dtype=torch.float64)
    c = None if context_features is None else torch.randn(batch, context_features, generator=g,
                                                            dtype=torch.float64)
    return x, c


@pytest.mark.parametrize("context_features", [None, 3], ids=["plain", "context"])
@pytest.mark.parametrize("transform", KINDS)
def test_jacobian_is_lower_triangular(transform: str, context_features: int | None) -> None:
    """``∂z_i/∂x_j = 0`` for ``j ≥ i`` off the diagonal, and every ``j < i`` is used."""
    t = _build(transform, context_features)
    x, c = _data(context_features)
    for i in range(x.shape[0]):
        ci = None if c is None else c[i:i + 1]
        jac = torch.autograd.functional.jacobian(lambda v, ci=ci: t(v[None], ci)[0][0], x[i])
        assert torch.equal(torch.triu(jac, diagonal=1), torch.zeros_like(jac))
        below = jac[torch.tril_indices(D, D, offset=-1).unbind()]
        assert (below != 0).all(), jac
        assert (jac.diagonal() > 0).all()


@pytest.mark.parametrize("context_features", [None, 3], ids=["plain", "context"])
@pytest.mark.parametrize("transform", KINDS)
def test_log_det_matches_autograd_and_inverse(transform: str, context_features: int | None) -> None:
    t = _build(transform, context_features)
    x, c = _data(context_features)
    z, contribution = t(x, c)
    torch.testing.assert_close(contribution, log_abs_det_autograd(t, x, c), atol=1e-9, rtol=1e-9)
    assert contribution.abs().min() > 1e-3  # off the identity
    x_back = t.inverse(z, c)
    # Where a perturbed spline is nearly flat (g' ≪ 1) x is ill-conditioned given z: the inverse
    # is checked tightly in z and loosely in x.
    torch.testing.assert_close(t(x_back, c)[0], z, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(x_back, x, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("transform", KINDS)
def test_inverse_takes_features_passes(transform: str) -> None:
    """The inverse runs the MADE ``D`` times; ``D − 1`` passes leave the last feature wrong."""
    t = _build(transform)
    x, _ = _data(None)
    z, _ = t(x)
    calls = []
    handle = t.made.register_forward_hook(lambda *_: calls.append(1))
    t.inverse(z)
    handle.remove()
    assert len(calls) == D
    partial = z.new_zeros(z.shape)
    for _ in range(D - 1):
        partial, _ = t.elementwise(z, t.made(partial, None), inverse=True)
    torch.testing.assert_close(partial[:, :-1], x[:, :-1], atol=1e-9, rtol=1e-9)
    assert (partial[:, -1] - x[:, -1]).abs().max() > 1e-6


@pytest.mark.parametrize("transform", KINDS)
def test_starts_as_the_identity(transform: str) -> None:
    t = MaskedAutoregressive(D, transform=transform, context_features=2).double()
    x, c = _data(2)
    z, contribution = t(x, c)
    torch.testing.assert_close(z, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(contribution, torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)


def test_context_matters_and_is_checked() -> None:
    t = _build("spline", 3)
    x, c = _data(3)
    z1, v1 = t(x, c)
    z2, v2 = t(x, c + 1.0)
    assert not torch.allclose(z1, z2) and not torch.allclose(v1, v2)
    with pytest.raises(ValueError, match=r"MaskedAutoregressive.*needs a context of shape \(4, 3\)"):
        t(x)
    with pytest.raises(ValueError, match=r"MaskedAutoregressive.*expected a context of shape"):
        t.inverse(z1, c[:2])


def test_hidden_narrower_than_features_still_triangular() -> None:
    """Hidden degrees cycle through 1 … D − 1, so the mask stays autoregressive at any width."""
    torch.manual_seed(0)
    t = perturb_parameters(MaskedAutoregressive(D, hidden=(3, 2)).double(), scale=1.5, seed=1)
    x, _ = _data(None)
    jac = torch.autograd.functional.jacobian(lambda v: t(v[None])[0][0], x[0])
    assert torch.equal(torch.triu(jac, diagonal=1), torch.zeros_like(jac))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(features=0), ValueError, r"MaskedAutoregressive.*features"),
    (dict(features=4, transform="rq"), ValueError, r"MaskedAutoregressive.*transform.*'affine', 'spline'"),
    (dict(features=4, num_bins=0), ValueError, r"MaskedAutoregressive.*num_bins"),
    (dict(features=4, tail_bound=0.0), ValueError, r"MaskedAutoregressive.*tail_bound"),
    (dict(features=4, hidden=[8, -1]), ValueError, r"MaskedAutoregressive.*hidden"),
    (dict(features=4, context_features=2.5), ValueError, r"MaskedAutoregressive.*context_features"),
])
def test_bad_arguments_are_named(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        MaskedAutoregressive(**kwargs)


@pytest.mark.parametrize("transform", KINDS)
def test_one_feature_still_sees_the_context(transform: str) -> None:
    """With ``D = 1`` there is nothing before the feature: its parameters come from the context."""
    torch.manual_seed(0)
    t = MaskedAutoregressive(1, transform=transform, hidden=8, context_features=2).double()
    t = perturb_parameters(t, scale=1.5, seed=1)
    x = torch.full((3, 1), 0.5, dtype=torch.float64)
    c = torch.tensor([[0.0, 0.0], [1.0, -1.0], [-2.0, 1.0]], dtype=torch.float64)
    z, contribution = t(x, c)
    assert z.unique().numel() == 3 and contribution.unique().numel() == 3
    torch.testing.assert_close(t.inverse(z, c), x, atol=1e-10, rtol=1e-10)
