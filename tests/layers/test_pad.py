"""Pad: sizes, noise law, contribution against torch.distributions, closed forms, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import survae_flowify as ffn
from survae_flowify.layers.pad import Pad
from survae_flowify.testing import perturb_parameters
from tests.oracles import linear_gaussian_log_prob


@pytest.mark.parametrize(
    ("size", "k", "s", "padded", "out"),
    [(28, 3, 2, 29, 14), (32, 3, 2, 33, 16), (7, 3, 2, 7, 3), (14, 2, 2, 14, 7), (7, 2, 2, 8, 4),
     (5, 3, 1, 5, 3), (6, 4, 3, 7, 2)],
)
def test_padded_size_and_convolution_output(size: int, k: int, s: int, padded: int, out: int) -> None:
    x = torch.randn(2, 1, size, size + 1)
    z, _ = Pad(k, s)(x)
    padded_w = Pad(k, s).padded_size((size, size + 1))[1]
    assert z.shape == (2, 1, padded, padded_w)
    conv = nn.Conv2d(1, 1, k, s)
    assert conv(z).shape[2] == out
    # The fewest rows: one row less would not be tiled (or is below the input size).
    assert (padded - k) % s == 0 and (padded - 1 < size or (padded - 1 - k) % s != 0)


def test_no_padding_is_identity_with_zero_contribution() -> None:
    layer = perturb_parameters(Pad(3, 2), seed=2)
    x = torch.randn(3, 2, 7, 9)
    z, contribution = layer(x)
    assert torch.equal(z, x) and torch.equal(contribution, torch.zeros(3))


def test_exact_flag() -> None:
    assert Pad(3, 1).exact and not Pad(3, 1).stochastic_forward
    assert not Pad(3, 2).exact and Pad(3, 2).stochastic_forward
    assert Pad(3, 2, image_size=7).exact and not Pad(3, 2, image_size=8).exact
    assert Pad(2, 2, noise="uniform", image_size=5).bounded_noise
    assert not Pad(2, 2, noise="uniform", image_size=4).bounded_noise


def test_inverse_crops_and_keeps_the_input() -> None:
    layer = Pad(3, 2, image_size=(6, 8))
    x = torch.randn(4, 3, 6, 8)
    z, _ = layer(x)
    assert z.shape == (4, 3, 7, 9)
    assert torch.equal(z[:, :, :6, :8], x)
    assert torch.equal(layer.inverse(z), x)


@pytest.mark.parametrize("noise", ["normal", "uniform"])
def test_contribution_is_minus_log_q_of_the_padding(noise: str) -> None:
    torch.manual_seed(0)
    layer = perturb_parameters(Pad(3, 2, noise=noise), scale=0.5, seed=3).double()
    x = torch.randn(5, 2, 4, 6, dtype=torch.float64)
    z, contribution = layer(x)
    u = torch.cat([z[:, :, :4, 6:].flatten(1), z[:, :, 4:, :].flatten(1)], 1)
    assert u.shape == (5, 2 * (4 * 1 + 1 * 7))
    scale = layer.noise.log_scale.exp()
    if noise == "normal":
        reference = torch.distributions.Normal(0.0, scale).log_prob(u).sum(1)
    else:
        reference = torch.distributions.Uniform(-scale, scale).log_prob(u).sum(1)
    torch.testing.assert_close(contribution, -reference, atol=1e-10, rtol=0)


@pytest.mark.parametrize("noise", ["normal", "uniform"])
def test_padding_noise_law(noise: str) -> None:
    torch.manual_seed(1)
    layer = perturb_parameters(Pad(2, 2, noise=noise), scale=0.5, seed=4)
    scale = layer.noise.log_scale.exp().item()
    with torch.no_grad():
        z, _ = layer(torch.zeros(20_000, 1, 3, 3))
    u = torch.cat([z[:, :, :3, 3:].flatten(), z[:, :, 3:, :].flatten()]) / scale
    assert u.numel() == 20_000 * 7
    if noise == "normal":
        assert abs(u.mean()) < 0.01 and abs(u.std() - 1) < 0.01
    else:
        assert u.abs().max() <= 1 and abs(u.abs().mean() - 0.5) < 0.005


def test_noise_off_pads_with_zeros() -> None:
    layer = perturb_parameters(Pad(3, 2), seed=5)
    x = torch.randn(2, 1, 6, 6)
    with ffn.noise_off():
        z, contribution = layer(x)
    torch.testing.assert_close(z, nn.functional.pad(x, (0, 1, 0, 1)))
    assert torch.equal(contribution, torch.zeros(2))


def test_elbo_gap_is_the_closed_form_kl() -> None:
    """After Pad, a standard-normal base makes the padding's posterior N(0, 1): the expected gap
    is ``n · KL(N(0, σ²) ‖ N(0, 1))``, and the exact density comes from the oracle."""
    torch.manual_seed(0)
    layer = perturb_parameters(Pad(3, 2, in_channels=2, image_size=(4, 4)), scale=0.5, seed=6)
    flow = ffn.Flow(ffn.StandardNormal(2, 5, 5), layer).double()
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    exact = linear_gaussian_log_prob(flow, x)
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(exact, standard)  # the oracle agrees: the crop keeps x alone
    s = layer.noise.log_scale.double().exp().item()
    n = 2 * (5 * 5 - 4 * 4)
    kl = n * (0.5 * (s * s - 1) - math.log(s))
    with torch.no_grad():
        elbo = flow.log_prob(x.repeat(20_000, 1, 1, 1)).view(20_000, 3).mean(0)
    assert (elbo < exact).all()
    torch.testing.assert_close(exact - elbo, torch.full((3,), kl, dtype=torch.float64), atol=0.03, rtol=0)


def test_uniform_iw_bound_converges_to_the_likelihood_on_the_support() -> None:
    """With uniform noise the IW bound tends to ``log p(x) + n log P(|ε| ≤ σ)``, ε ~ N(0, 1)."""
    torch.manual_seed(0)
    layer = perturb_parameters(Pad(2, 2, noise="uniform", in_channels=1, image_size=(3, 4)),
                               scale=0.5, seed=7)
    flow = ffn.Flow(ffn.StandardNormal(1, 4, 4), layer).double()
    x = torch.randn(2, 1, 3, 4, dtype=torch.float64)
    s = layer.noise.log_scale.double().exp()
    exact = torch.distributions.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(1)
    limit = exact + 4 * torch.log(torch.erf(s / math.sqrt(2)))
    with torch.no_grad():
        iw = flow.log_prob(x, num_samples=20_000, chunk_size=20_000)
    assert (exact - limit > 0.2).all()  # the restriction to the support is visible
    torch.testing.assert_close(iw, limit, atol=0.01, rtol=0)


def test_sizes_are_not_cached() -> None:
    layer = Pad(3, 2)
    for size in (5, 6, 9, 4):
        x = torch.randn(2, 1, size, size)
        assert layer(x)[0].shape[-1] == layer.padded_size((size, size))[1]


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"Pad.*stride \(3\) larger than kernel_size \(2\)"):
        Pad(2, 3)
    with pytest.raises(ValueError, match=r"Pad.*kernel_size must be a positive int"):
        Pad(0, 1)
    with pytest.raises(ValueError, match=r"Pad.*stride must be a positive int"):
        Pad(3, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Pad.*noise must be one of .normal., .uniform."):
        Pad(3, 2, noise="laplace")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Pad.*image_size"):
        Pad(3, 2, image_size=(4, 4, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Pad.*at least 3×3.*got 2×5"):
        Pad(3, 2, image_size=(2, 5))
    with pytest.raises(ValueError, match=r"Pad.*at least 3×3.*got 2×2"):
        Pad(3, 2)(torch.randn(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"Pad.*expected x of shape \(batch, 2, 4, 4\), got \(1, 1, 4, 4\)"):
        Pad(3, 2, in_channels=2, image_size=4)(torch.randn(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"Pad.*expected x of shape \(batch, \*, \*, \*\), got \(4, 4\)"):
        Pad(3, 2)(torch.randn(4, 4))
    with pytest.raises(ValueError, match=r"Pad.*cannot invert without the input size.*image_size"):
        Pad(3, 2).inverse(torch.randn(1, 1, 5, 5))


def test_noise_scale_only_when_something_is_ever_padded() -> None:
    """An always-exact Pad has no noise, so it must not hold a parameter that never gets a
    gradient (DDP would need ``find_unused_parameters``)."""
    assert list(Pad(3, 1).parameters()) == []
    assert list(Pad(3, 2, image_size=7).parameters()) == []
    assert len(list(Pad(3, 2).parameters())) == 1
    assert len(list(Pad(3, 2, image_size=8).parameters())) == 1
    assert "noise='uniform'" in repr(Pad(3, 1, noise="uniform"))


def test_empty_batch() -> None:
    layer = Pad(3, 2, image_size=(4, 4))
    z, contribution = layer(torch.randn(0, 2, 4, 4))
    assert z.shape == (0, 2, 5, 5) and contribution.shape == (0,)
    assert layer.inverse(z).shape == (0, 2, 4, 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"kernel_size": True, "stride": 1}, ValueError,
         r"Pad: kernel_size must be a positive int, got True"),
        ({"image_size": (True, 4)}, ValueError, r"Pad: image_size must be .*got \(True, 4\)"),
        ({"image_size": 0}, ValueError, r"Pad: image_size must be"),
        ({"in_channels": True}, ValueError, r"Pad: in_channels must be a positive int, got True"),
        ({"init_scale": 0.0}, ValueError, r"Pad: init_scale must be a finite number > 0.0, got 0.0"),
        ({"init_scale": -1}, ValueError, r"Pad: init_scale must be a finite number > 0.0, got -1"),
        ({"init_scale": float("nan")}, ValueError, r"Pad: init_scale must be a finite number"),
        ({"noise": "bogus"}, ValueError, r"Pad: noise must be one of 'normal', 'uniform', got 'bogus'"),
    ],
)
def test_constructor_validation(kwargs: dict, error: type, message: str) -> None:
    args = {"kernel_size": 1, "stride": 1} if "kernel_size" not in kwargs else {}
    with pytest.raises(error, match=message):
        Pad(**args, **kwargs)
