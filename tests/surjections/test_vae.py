"""The VAE layer against the closed form of a linear-Gaussian VAE: prior N(0, I), decoder
p(x | z) = N(Az + c, S) with S diagonal, any diagonal-normal encoder q(z | x)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

import survae_flowify as ffn
from survae_flowify.testing import perturb_parameters

F64 = torch.float64
DX, DZ = 3, 2


def _linear_decoder() -> tuple[ffn.ConditionalNormal, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A ConditionalNormal over x whose network is one linear map, with a constant scale (zero
    weights into log σ): the decoder ``N(Az + c, diag s²)``; returns it, ``A``, ``c``, ``s²``."""
    decoder = ffn.ConditionalNormal(DX, DZ)
    gen = torch.Generator().manual_seed(5)
    linear = nn.Linear(DZ, 2 * DX)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(2 * DX, DZ, generator=gen))
        linear.weight[DX:] = 0
        linear.bias.copy_(0.5 * torch.randn(2 * DX, generator=gen))
    decoder.net = nn.Sequential(linear)
    decoder = decoder.double()
    a, c = linear.weight[:DX].detach().double(), linear.bias[:DX].detach().double()
    log_s = 5 * torch.tanh(linear.bias[DX:].detach().double() / 5)  # ConditionalNormal's soft bound
    return decoder, a, c, torch.exp(2 * log_s)


def _vae() -> tuple[ffn.Flow, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    decoder, a, c, s2 = _linear_decoder()
    encoder = perturb_parameters(ffn.ConditionalNormal(DZ, DX, hidden=16).double(), scale=0.5, seed=2)
    return ffn.Flow(ffn.StandardNormal(DZ), ffn.VAE(encoder, decoder)).double(), a, c, s2


def test_elbo_equals_log_p_minus_the_kl_to_the_posterior() -> None:
    """Mean of the forward's ELBO = log p(x) − KL(q(z|x) ‖ p(z|x)), with the marginal
    N(c, AAᵀ + S) and the posterior N(Σ Aᵀ S⁻¹ (x − c), Σ), Σ = (I + Aᵀ S⁻¹ A)⁻¹, in closed form;
    the importance-weighted bound approaches log p(x)."""
    flow, a, c, s2 = _vae()
    gen = torch.Generator().manual_seed(1)
    x = c + torch.randn(4, DX, generator=gen, dtype=F64)
    log_p = MultivariateNormal(c, a @ a.T + torch.diag(s2)).log_prob(x)
    cov = torch.linalg.inv(torch.eye(DZ, dtype=F64) + a.T @ torch.diag(1 / s2) @ a)
    posterior = MultivariateNormal((x - c) @ torch.diag(1 / s2) @ a @ cov, cov)
    loc, log_scale = flow.transform.encoder.params(x)
    q = MultivariateNormal(loc.detach(), torch.diag_embed(log_scale.detach().exp().square()))
    expected = log_p - kl_divergence(q, posterior)
    torch.manual_seed(3)
    with torch.no_grad():
        draws = torch.stack([flow.log_prob(x) for _ in range(4000)])
        iw = torch.stack([flow.log_prob(x, num_samples=20_000, chunk_size=20_000)
                          for _ in range(3)]).median(0).values
    standard_error = draws.std(0) / len(draws) ** 0.5
    assert ((draws.mean(0) - expected).abs() < 4 * standard_error + 1e-6).all(), (draws.mean(0), expected)
    assert (expected < log_p - 1e-2).all()
    assert (iw <= log_p + 0.01).all() and (log_p - iw).max() < 0.03, (iw, log_p)


def test_inverse_samples_the_decoder_or_takes_its_mean() -> None:
    flow, a, c, s2 = _vae()
    vae = flow.transform
    z = torch.randn(3, DZ, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(vae.inverse(z, mean=True), z @ a.T + c)
        draws = vae.inverse(z.repeat(20_000, 1)).view(20_000, 3, DX)
    torch.testing.assert_close(draws.mean(0), z @ a.T + c, atol=0.05, rtol=0)
    torch.testing.assert_close(draws.var(0), s2.expand(3, DX), atol=0.05, rtol=0.05)


def test_noise_off_takes_the_encoder_mean() -> None:
    flow, *_ = _vae()
    vae = flow.transform
    x = torch.randn(4, DX, dtype=F64)
    with ffn.noise_off(), torch.no_grad():
        z, contribution = vae(x)
        loc, _ = vae.encoder.params(x)
        torch.testing.assert_close(z, loc)
        torch.testing.assert_close(contribution, vae.decoder.log_prob(x, z) - vae.encoder.log_prob(z, x))


def test_kind_and_breakdown() -> None:
    flow, *_ = _vae()
    vae = flow.transform
    assert not vae.exact and vae.stochastic_forward and vae.stochastic_inverse
    assert not flow.exact and flow.context_features is None  # its densities' contexts stay inside
    assert flow.breakdown(torch.randn(4, DX, dtype=F64)).rows[0][1:3] == ("VAE", "bound")
    with pytest.raises(ValueError, match="needs an exact flow, but VAE gives a lower bound"):
        flow.sample_and_log_prob(2)


def test_a_flow_decoder_and_shapes() -> None:
    decoder = ffn.Flow(ffn.ConditionalNormal((1, 2, 2), 2), ffn.Sequential())
    vae = ffn.VAE(ffn.ConditionalNormal(2, 4), decoder)
    assert vae.in_shape == (1, 2, 2) and vae.out_shape == (2,)
    z, contribution = vae(torch.randn(5, 1, 2, 2))
    assert z.shape == (5, 2) and contribution.shape == (5,)
    assert vae.inverse(z).shape == (5, 1, 2, 2) and vae.inverse(z, mean=True).shape == (5, 1, 2, 2)
    with pytest.raises(ValueError, match=r"VAE.*expected x of shape \(batch, 1, 2, 2\)"):
        vae(torch.randn(5, 4))


@pytest.mark.parametrize(("encoder", "decoder", "error", "message"), [
    (nn.Linear(3, 2), ffn.ConditionalNormal(3, 2), TypeError, r"VAE: encoder must be .*got Linear"),
    (ffn.ConditionalNormal(2, 3), "normal", TypeError, r"VAE: decoder must be .*got str"),
    (ffn.ConditionalNormal(2, 4), ffn.ConditionalNormal(3, 2), ValueError,
     r"VAE: encoder .*context_features=3.*got context_features=4"),
    (ffn.ConditionalNormal(2, 3), ffn.ConditionalNormal(3, 5), ValueError,
     r"VAE: decoder .*context_features=2.*got context_features=5"),
    (ffn.Flow(ffn.StandardNormal(2), ffn.Reverse()), ffn.ConditionalNormal(3, 2), ValueError,
     r"VAE: encoder must be conditional"),
])
def test_bad_encoders_and_decoders(encoder: object, decoder: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        ffn.VAE(encoder, decoder)  # type: ignore[arg-type]
