"""The layers flowify converts to, against numbers that do not come from them: torch's own
layers, closed forms, and an importance-sampled normalisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import survae_flowify as ffn
from survae_flowify.bijections.elementwise import ElementwiseAffine
from survae_flowify.layers.avgpool import AvgPool2d
from survae_flowify.layers.conv import Conv2d
from survae_flowify.layers.pad import Pad
from survae_flowify.testing import perturb_parameters
from survae_flowify.transforms.activations import ELU, Sigmoid, Softplus, Tanh


@pytest.mark.parametrize("density", ["diagonal", "conditional"])
def test_avgpool_density_integrates_to_one(density: str) -> None:
    """1×2×2 → 1×1×1 over a standard normal base: ``E_q[p(x)/q(x)] = 1`` for any proposal ``q``
    (here a wide normal), with perturbed parameters (the density's network moved off zero)."""
    torch.manual_seed(0)
    layer = perturb_parameters(AvgPool2d(2, in_channels=1, inverse_density=density, hidden=8), scale=0.3,
                               seed=2).double()
    flow = ffn.Flow(ffn.StandardNormal((1, 1, 1)), layer)
    proposal = torch.distributions.Normal(torch.zeros(4, dtype=torch.float64), 2.5)
    x = proposal.sample((400_000,))
    with torch.no_grad():
        log_w = flow.log_prob(x.reshape(-1, 1, 2, 2)) - proposal.log_prob(x).sum(1)
    w = log_w.exp()
    mean, stderr = w.mean().item(), (w.std() / math.sqrt(w.numel())).item()
    assert stderr < 0.01 and abs(mean - 1.0) < 4 * stderr + 1e-3, (mean, stderr)


def test_avgpool_forward_is_torch_avg_pool_and_contribution_is_closed_form() -> None:
    """With a standard normal inverse density, ``V = −log 2 + log N(d; 0, I)`` for a 2×2 patch,
    where ``d`` is the patch's deviation from its mean (``‖d‖² = ‖p‖² − 4 z²``)."""
    layer = AvgPool2d(2, in_channels=3, inverse_density="normal").double()
    x = torch.randn(5, 3, 4, 6, dtype=torch.float64)
    z, contribution = layer(x)
    torch.testing.assert_close(z, F.avg_pool2d(x, 2), atol=1e-12, rtol=0)
    dropped_sq = x.square().flatten(1).sum(1) - 4 * z.square().flatten(1).sum(1)
    m = 3 * 2 * 3 * 3  # 3 dropped coordinates per patch, 3 channels, 2×3 patches
    expected = -math.log(2.0) * 3 * 2 * 3 - 0.5 * dropped_sq - 0.5 * m * math.log(2 * math.pi)
    torch.testing.assert_close(contribution, expected, atol=1e-10, rtol=0)


def test_avgpool_rejects_images_it_does_not_tile() -> None:
    with pytest.raises(ValueError, match=r"AvgPool2d\(kernel_size=\(2, 2\), in_channels=1\): expected H "
                                         r"and W that are multiples of the kernel, got 3×4"):
        AvgPool2d(2, in_channels=1)(torch.randn(2, 1, 3, 4))
    with pytest.raises(ValueError, match="at least two pixels"):
        AvgPool2d(1, in_channels=1)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(ELU(0.7), nn.ELU(0.7)), (Tanh(), nn.Tanh()), (Sigmoid(), nn.Sigmoid()),
     (Softplus(1.5), nn.Softplus(1.5))],
)
def test_activations_match_torch_and_their_derivative(ours: ffn.Transform, theirs: nn.Module) -> None:
    x = torch.linspace(-6, 6, 241, dtype=torch.float64).reshape(1, -1)
    z, contribution = ours(x)
    torch.testing.assert_close(z, theirs(x), atol=1e-12, rtol=0)
    # d/dx of torch's own function, entry by entry (the map is elementwise)
    xs = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(theirs(xs).sum(), xs)
    torch.testing.assert_close(contribution, grad.abs().log().sum(1), atol=1e-9, rtol=0)


@pytest.mark.parametrize(
    ("layer", "outside", "image"),
    [(Tanh(), 1.0, r"\(-1.0, 1.0\)"), (Sigmoid(), -0.1, r"\(0.0, 1.0\)"), (ELU(0.5), -0.5, r"\(-0.5, inf\)"),
     (Softplus(), 0.0, r"\(0.0, inf\)")],
)
def test_inverse_outside_the_image_is_a_clear_error(layer: ffn.Transform, outside: float, image: str) -> None:
    with pytest.raises(ValueError, match=rf"{type(layer).__name__}\(.*\): z must lie in {image}, the image"):
        layer.inverse(torch.tensor([[0.2, outside]]))


def test_elementwise_affine_is_batch_norm_in_eval_mode() -> None:
    torch.manual_seed(1)
    norms = ((nn.BatchNorm1d(4), (4,)), (nn.BatchNorm1d(3), (3, 5)), (nn.BatchNorm2d(3), (3, 2, 4)))
    for norm, shape in norms:
        norm.train()
        for _ in range(3):  # running statistics off their initial values, affine weights of both signs
            norm(torch.randn(16, *shape) * 3 + 1)
        with torch.no_grad():
            norm.weight.copy_(torch.linspace(-2, 1.5, norm.num_features))
            norm.bias.normal_()
        norm.eval()
        layer = ElementwiseAffine.from_batch_norm(norm, shape)
        x = torch.randn(6, *shape)
        z, contribution = layer(x)
        torch.testing.assert_close(z, norm(x), atol=1e-5, rtol=1e-5)
        a = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        expected = math.prod(shape[1:]) * a.abs().log().sum()
        torch.testing.assert_close(contribution, expected.expand(6), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="non-zero"):
        ElementwiseAffine((2,), scale=torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize(
    ("padding", "size", "stride"),
    [(1, (5, 5), 1), ((1, 2), (4, 5), 1), ((2, 0, 1, 3), (4, 4), 1), (1, (6, 7), 2),
     ((0, 1, 1, 0), (5, 5), 2)],
)
def test_padded_conv_is_zero_padded_torch_conv_with_the_noise_off(
        padding: int | tuple[int, ...], size: tuple[int, int], stride: int) -> None:
    torch.manual_seed(2)
    layer = Conv2d(2, 3, 3, stride, padding=padding, image_size=size).double()
    x = torch.randn(4, 2, *size, dtype=torch.float64)
    left, _, top, _ = layer.padding
    hp, wp = layer.pad.padded_size(size)
    # F.pad with the fixed border plus the tiling rows/columns Pad adds on the right/bottom
    padded = F.pad(x, (left, wp - size[1] - left, top, hp - size[0] - top))
    assert (hp - 3) % stride == 0 and (wp - 3) % stride == 0
    with ffn.noise_off(), torch.no_grad():
        z, _ = layer(x)
        torch.testing.assert_close(z, F.conv2d(padded, layer.weight, layer.bias, stride), atol=1e-10, rtol=0)
    assert layer.inverse(z).shape == x.shape  # the crop undoes the border and the tiling rows


def test_pad_border_noise_and_inverse() -> None:
    torch.manual_seed(3)
    layer = perturb_parameters(Pad(2, 1, padding=(1, 2, 0, 1)), scale=0.5, seed=1).double()
    x = torch.randn(3, 2, 3, 4, dtype=torch.float64)
    z, contribution = layer(x)
    assert z.shape == (3, 2, 4, 7)
    assert torch.equal(z[:, :, 0:3, 1:5], x) and torch.equal(layer.inverse(z), x)
    border = torch.ones(4, 7, dtype=torch.bool)
    border[0:3, 1:5] = False
    u = z[:, :, border]  # the 2·(28 − 12) noise entries
    sigma = layer.noise.log_scale.exp()
    expected = torch.distributions.Normal(0.0, sigma).log_prob(u).sum((1, 2))
    torch.testing.assert_close(contribution, -expected, atol=1e-10, rtol=0)
    assert not layer.exact and Pad(2, 1).exact
    with pytest.raises(ValueError, match=r"Pad: padding must be an int >= 0.*got \(1, -1\)"):
        Pad(2, 1, padding=(1, -1))
