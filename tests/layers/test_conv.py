"""Conv2d and PatchLinear: nn.Conv2d equivalence, regimes, closed-form likelihoods, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import survae_flowify as ffn
from survae_flowify.layers.conv import (
    Conv2d,
    PatchLinear,
    PatchLinearBijection,
    PatchLinearGenerative,
    PatchLinearInference,
)
from survae_flowify.layers.linear import Linear
from survae_flowify.testing import perturb_parameters
from tests.oracles import linear_gaussian_log_prob


def _conv(*args, seed: int = 0, scale: float = 0.3, **kwargs) -> Conv2d:
    torch.manual_seed(seed)
    return perturb_parameters(Conv2d(*args, **kwargs), scale=scale, seed=seed + 1).double()


def _pad_like_conv(layer: Conv2d, x: torch.Tensor) -> torch.Tensor:
    hp, wp = layer.pad.padded_size(tuple(x.shape[2:]))
    return F.pad(x, (0, wp - x.shape[3], 0, hp - x.shape[2]))


CONFIGS = [  # (in, out, k, s, image size): every regime, with and without padding
    (1, 2, 3, 2, (5, 5)),   # 9 → 2: reducing, overlapping
    (2, 3, 3, 2, (6, 7)),   # padded
    (1, 9, 3, 2, (5, 5)),   # square kernel
    (1, 12, 2, 1, (4, 5)),  # increasing
    (2, 5, 2, 2, (4, 4)),   # 8 → 5, exact
    (2, 4, 4, 3, (9, 8)),
]


@pytest.mark.parametrize(("c_in", "c_out", "k", "s", "size"), CONFIGS)
def test_noise_off_equals_f_conv2d(c_in: int, c_out: int, k: int, s: int, size: tuple[int, int]) -> None:
    layer = _conv(c_in, c_out, k, s, inverse_density="diagonal")
    x = torch.randn(3, c_in, *size, dtype=torch.float64)
    with ffn.noise_off():
        z, _ = layer(x)
    want = F.conv2d(_pad_like_conv(layer, x), layer.weight, layer.bias, stride=s)
    torch.testing.assert_close(z, want, atol=1e-12, rtol=0)
    assert layer.weight.shape == (c_out, c_in, k, k) and layer.bias.shape == (c_out,)
    # With the noise on, the shape is the same and the output differs where noise was added.
    z_noisy, _ = layer(x)
    assert z_noisy.shape == want.shape
    noisy = (layer.pad.padded_size(size) != size or not layer.unfold.exact
             or isinstance(layer.kernel, ffn.GenerativeSurjection))
    assert noisy == (not torch.allclose(z_noisy, want))


def test_noise_off_in_float32() -> None:
    layer = perturb_parameters(Conv2d(2, 3, 3, 2), seed=2)
    x = torch.randn(2, 2, 6, 6)
    with ffn.noise_off():
        z, contribution = layer(x)
    want = F.conv2d(F.pad(x, (0, 1, 0, 1)), layer.weight, layer.bias, stride=2)
    assert z.dtype == contribution.dtype == torch.float32
    torch.testing.assert_close(z, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "s", "size", "out"),
    [(1, 16, 3, 2, 28, 14), (16, 24, 2, 2, 14, 7), (24, 32, 3, 2, 7, 3), (32, 48, 2, 1, 3, 2),
     (48, 64, 2, 1, 2, 1), (3, 27, 3, 2, 32, 16), (100, 112, 3, 2, 4, 2), (112, 128, 2, 2, 2, 1)],
)
def test_output_shape_matches_nn_conv2d(c_in: int, c_out: int, k: int, s: int, size: int, out: int) -> None:
    """The layer sizes of the paper's FCONV models (appendix figs. 10–11)."""
    layer = Conv2d(c_in, c_out, k, s, image_size=size, inverse_density="normal")
    x = torch.randn(2, c_in, size, size)
    with torch.no_grad():
        z, contribution = layer(x)
        reference = nn.Conv2d(c_in, c_out, k, s)(_pad_like_conv(layer, x))
    assert z.shape == reference.shape == (2, c_out, out, out)
    assert layer.out_shape == (c_out, out, out) and layer.output_size((size, size)) == (out, out)
    assert contribution.shape == (2,) and torch.isfinite(contribution).all()


@pytest.mark.parametrize(
    ("c_in", "c_out", "kind", "base"),
    [(8, 3, PatchLinearInference, ffn.InferenceSurjection), (4, 4, PatchLinearBijection, ffn.Bijection),
     (4, 7, PatchLinearGenerative, ffn.GenerativeSurjection)],
)
def test_kernel_regime_classes(c_in: int, c_out: int, kind: type, base: type) -> None:
    kernel = PatchLinear(c_in, c_out)
    assert type(kernel) is kind and isinstance(kernel, PatchLinear) and isinstance(kernel, base)
    assert kernel.exact == (c_in >= c_out)
    assert hasattr(kernel, "inverse_density") == (c_in > c_out)


def test_exactness_of_the_composite() -> None:
    assert Conv2d(2, 5, 2, 2, image_size=4).exact  # no padding, no overlap, 8 → 5
    assert not Conv2d(2, 5, 2, 2, image_size=5).exact  # padded
    assert not Conv2d(2, 5, 2, 2).exact  # the padding depends on the input
    assert not Conv2d(1, 5, 2, 2, image_size=4).exact  # 4 → 5: increasing kernel
    assert not Conv2d(1, 2, 3, 2, image_size=5).exact  # overlapping patches
    assert Conv2d(1, 2, 3, 2, noise="uniform").bounded_noise


def test_patch_linear_is_the_linear_at_every_position() -> None:
    """The contribution is the Linear's own (row-wise) contribution summed over positions."""
    for c_in, c_out in [(6, 6), (6, 2), (3, 5)]:
        torch.manual_seed(0)
        kernel = perturb_parameters(PatchLinear(c_in, c_out, inverse_density="normal"), seed=3).double()
        x = torch.randn(2, c_in, 3, 4, dtype=torch.float64)
        torch.manual_seed(5)
        z, contribution = kernel(x)
        rows = x.permute(2, 3, 0, 1).reshape(-1, c_in)  # position-major: the kernel's draw order
        torch.manual_seed(5)
        z_rows, c_rows = kernel.linear(rows)  # the Linear as a Transform, its density N(0, I)
        torch.testing.assert_close(z, z_rows.reshape(3, 4, 2, c_out).permute(2, 3, 0, 1), atol=1e-12, rtol=0)
        torch.testing.assert_close(contribution, c_rows.reshape(12, 2).sum(0), atol=1e-10, rtol=0)
        torch.testing.assert_close(kernel.weight, kernel.linear.weight)


@pytest.mark.parametrize(("net", "reach"), [("3x3-3x3", 2), ("3x3-1x1", 1), ("1x1-1x1", 0)])
def test_conditional_density_is_a_convolutional_net_over_the_output_map(net: str, reach: int) -> None:
    """A change of z at one position moves the density's mean exactly within the receptive field
    of its two convolutions (``reach`` pixels in every direction)."""
    torch.manual_seed(0)
    kernel = perturb_parameters(PatchLinear(9, 2, inverse_density="conditional", hidden=8,
                                            density_net=net), seed=4)
    density = kernel.inverse_density
    assert any(isinstance(m, nn.Conv2d) for m in density.modules())
    z = torch.randn(1, 2, 7, 7)
    z2 = z.clone()
    z2[0, :, 3, 3] += 1.0
    with torch.no_grad():
        delta = (density.mean(z2) - density.mean(z)).abs().sum(1)[0]
    rows, cols = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    inside = ((rows - 3).abs() <= reach) & ((cols - 3).abs() <= reach)
    assert (delta[inside] > 0).all() and (delta[~inside] == 0).all()
    # Any map size: the same kernel inverts 2×2 and 5×3 maps.
    for size in [(2, 2), (5, 3)]:
        zz = torch.randn(2, 2, *size)
        assert kernel.inverse(zz).shape == (2, 9, *size)
        torch.testing.assert_close(kernel(kernel.inverse(zz))[0], zz, atol=1e-5, rtol=1e-5)


def _reference_map_density(density: nn.Module, d: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``Σ log N(d; μ(z), σ(z)²)`` from the density's convolutions run as plain ``nn.Sequential``
    on NCHW maps, ``log σ = 5·tanh(raw/5)``, scored by ``torch.distributions.Normal``."""
    loc, raw = density.net(z.contiguous()).chunk(2, dim=1)
    scale = torch.exp(5 * torch.tanh(raw / 5))
    return torch.distributions.Normal(loc, scale).log_prob(d).flatten(1).sum(1)


@pytest.mark.parametrize("net", ["3x3-3x3", "3x3-1x1", "1x1-1x1"])
def test_conditional_map_density_is_the_normal_of_its_network(net: str) -> None:
    """Off its initial (standard-normal) values, the density of every network kind is the diagonal
    normal whose mean and log-scale the convolutions give, in any memory layout of ``d``, ``z``."""
    torch.manual_seed(0)
    kernel = perturb_parameters(PatchLinear(10, 3, hidden=5, density_net=net), scale=1.0, seed=2).double()
    density = kernel.inverse_density
    z = torch.randn(4, 3, 5, 6, dtype=torch.float64)
    d = torch.randn(4, 7, 5, 6, dtype=torch.float64)
    want = _reference_map_density(density, d, z)
    assert (want - torch.distributions.Normal(0.0, 1.0).log_prob(d).flatten(1).sum(1)).abs().min() > 0.1
    position_major = [t.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1) for t in (d, z)]
    for dd, zz in [(d, z), position_major]:
        with torch.no_grad():
            torch.testing.assert_close(density.log_prob(dd, zz), want, atol=1e-10, rtol=0)
            torch.testing.assert_close(density.mean(zz), density.net(z)[:, :7], atol=1e-12, rtol=0)


def test_conditional_vector_density_is_the_normal_of_its_network() -> None:
    """The dense layers' density (an MLP on vectors) shares the fused log-density: against
    ``torch.distributions.Normal`` of the MLP's outputs, off its initial values."""
    from survae_flowify.distributions.conditional import ConditionalNormalDensity

    torch.manual_seed(1)
    density = perturb_parameters(ConditionalNormalDensity((6,), (4,), hidden=9), scale=1.0, seed=3).double()
    z, d = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    loc, raw = density.net(z).chunk(2, dim=1)
    want = torch.distributions.Normal(loc, torch.exp(5 * torch.tanh(raw / 5))).log_prob(d).sum(1)
    with torch.no_grad():
        torch.testing.assert_close(density.log_prob(d, z), want, atol=1e-10, rtol=0)
    assert (want - torch.distributions.Normal(0.0, 1.0).log_prob(d).sum(1)).abs().min() > 0.1


def test_density_width_follows_the_kernel() -> None:
    """Weights of the map density: ``h·(9·C_out + 2M)`` for ``"3x3-1x1"`` (default ``h = 64``;
    ``hidden=None``: ``h = C_out``) against ``9·h·(C_out + 2M)`` for ``"3x3-3x3"``."""
    def weights(density: nn.Module) -> int:
        return sum(p.numel() for name, p in density.named_parameters() if name.endswith("weight"))

    for c_in, c_out in [(64, 24), (216, 32), (192, 64)]:
        m = c_in - c_out
        default = PatchLinear(c_in, c_out).inverse_density
        assert default.map_net == "3x3-1x1" and weights(default) == 64 * (9 * c_out + 2 * m)
        narrow = PatchLinear(c_in, c_out, hidden=None).inverse_density
        assert narrow.net[0].out_channels == c_out
        assert weights(narrow) == c_out * (9 * c_out + 2 * m)
        old = PatchLinear(c_in, c_out, density_net="3x3-3x3").inverse_density
        assert weights(old) == 9 * 64 * (c_out + 2 * m)
        assert PatchLinear(c_in, c_out, hidden=7).inverse_density.net[0].out_channels == 7
    # The builders route density_net to the convolutions only; the Linear layers keep theirs.
    from survae_flowify.models import fconv1

    for kwargs, net in [({"density_net": "3x3-3x3"}, "3x3-3x3"), ({}, "3x3-1x1")]:
        convs = [t for t in fconv1(**kwargs).transform if isinstance(t, Conv2d)]
        densities = [c.kernel.inverse_density for c in convs if c.kernel.in_channels > c.kernel.out_channels]
        assert len(densities) == 4 and all(d.map_net == net for d in densities)
    flow = fconv1(hidden=None)  # the width rule reaches the convolutions only
    convs = [t for t in flow.transform if isinstance(t, Conv2d)]
    assert [c.kernel.inverse_density.net[0].out_channels for c in convs[1:]] == [24, 32, 48, 64]
    dense = [t for t in flow.transform if isinstance(t, Linear) and hasattr(t, "inverse_density")]
    assert dense and all(t.inverse_density.net[0].out_features == 64 for t in dense)


def test_bounded_log_scale_is_five_tanh() -> None:
    from survae_flowify.distributions.conditional import _bounded_log_scale

    raw = torch.linspace(-200, 200, 4001, dtype=torch.float64)
    torch.testing.assert_close(_bounded_log_scale(raw), 5 * torch.tanh(raw / 5), atol=1e-13, rtol=0)
    raw32 = raw.float()
    torch.testing.assert_close(_bounded_log_scale(raw32), 5 * torch.tanh(raw32 / 5), atol=2e-6, rtol=0)


def test_diagonal_density_is_per_channel() -> None:
    kernel = PatchLinear(7, 3, inverse_density="diagonal")
    assert kernel.inverse_density.loc.shape == (4, 1, 1)
    assert sum(p.numel() for p in kernel.inverse_density.parameters()) == 8


def test_exact_conv_matches_the_closed_form() -> None:
    """2×2 kernels, stride 2, no padding, reducing kernel: exact, to 1e-8 in float64."""
    for inverse_density in ("normal", "diagonal"):
        layer = _conv(2, 3, 2, 2, image_size=4, inverse_density=inverse_density, seed=7)
        flow = ffn.Flow(ffn.StandardNormal(3, 2, 2), layer).double()
        assert flow.exact
        x = torch.randn(4, 2, 4, 4, dtype=torch.float64)
        with torch.no_grad():
            log_p = flow.log_prob(x)
        torch.testing.assert_close(log_p, linear_gaussian_log_prob(flow, x), atol=1e-8, rtol=0)


def _bound_check(transform: ffn.Transform, n: int, k: int, tol: float) -> tuple:
    """ELBO below the closed form, IW bound within ``tol``, on data drawn from the model.

    Parameters are moved by 0.1 (not more): the gap grows fast with the mismatch between the
    isotropic noise and the true posterior, and so does the variance of the importance weights.
    """
    flow = ffn.Flow(ffn.StandardNormal(*transform.out_shape), transform).double()
    torch.manual_seed(3)
    with torch.no_grad():
        x = flow.sample(n)
    exact = linear_gaussian_log_prob(flow, x)
    with torch.no_grad():
        elbo = flow.log_prob(x.repeat(2000, *[1] * (x.dim() - 1))).view(2000, x.shape[0]).mean(0)
        iw = flow.log_prob(x, num_samples=k, chunk_size=20_000)
    assert not flow.exact
    assert (elbo < exact - 0.05).all(), (elbo, exact)  # a visible gap ...
    assert (exact - iw).abs().max() < tol, (iw, exact)  # ... that the IW bound closes
    return exact, elbo, iw


def test_overlapping_conv_bound_matches_the_closed_form() -> None:
    """3×3 kernels, stride 2, padding 4×4 → 5×5, 9 → 2 kernel with a diagonal inverse density."""
    layer = _conv(1, 2, 3, 2, image_size=4, inverse_density="diagonal", seed=11, scale=0.1)
    _bound_check(layer, 3, 50_000, 0.03)


def test_increasing_conv_bound_matches_the_closed_form() -> None:
    """2×2 kernels, stride 1 on 3×3 (shared pixels) and a 4 → 6 kernel with normal noise."""
    layer = _conv(1, 6, 2, 1, image_size=3, seed=12, scale=0.1)
    _bound_check(layer, 3, 50_000, 0.03)


def test_conv_stack_bound_matches_the_closed_form() -> None:
    stack = ffn.Sequential(
        _conv(1, 3, 2, 1, image_size=3, inverse_density="diagonal", seed=13, scale=0.1),
        _conv(3, 4, 2, 2, image_size=2, inverse_density="normal", seed=14, scale=0.1),
    )
    _bound_check(stack, 2, 50_000, 0.03)


def test_breakdown_shows_the_three_parts() -> None:
    layer = _conv(1, 2, 3, 2, image_size=4, inverse_density="normal")
    flow = ffn.Flow(ffn.StandardNormal(2, 2, 2), ffn.Sequential(layer, ffn.LeakyReLU(0.5)))
    table = flow.breakdown(torch.randn(3, 1, 4, 4, dtype=torch.float64))
    names = [row[0] for row in table.rows]
    assert names[:3] == ["0.pad", "0.unfold", "0.kernel"]
    assert [row[1] for row in table.rows[:3]] == ["Pad", "Unfold", "PatchLinearInference"]
    assert [row[2] for row in table.rows[:3]] == ["bound", "bound", "exact"]
    assert table.rows[1][4] == (9, 2, 2) and table.rows[2][4] == (2, 2, 2)


@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "s", "bias"),
    [(2, 3, 3, 2, True), (1, 6, 2, 1, True), (1, 4, 2, 2, False), (3, 5, 2, 2, True)],
)
def test_from_conv2d_keeps_the_trained_weights(c_in: int, c_out: int, k: int, s: int, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, k, s, bias=bias)
    layer = Conv2d.from_conv2d(conv, image_size=(5, 6), inverse_density="diagonal", rotation="exp")
    assert isinstance(layer, Conv2d) and layer.kernel.linear.U.kind == "exp"
    assert layer.weight.dtype == torch.float32
    torch.testing.assert_close(layer.weight, conv.weight, atol=1e-5, rtol=1e-5)
    assert (layer.bias is None) == (not bias)
    if bias:
        torch.testing.assert_close(layer.bias, conv.bias)
    x = torch.randn(2, c_in, 5, 6)
    with ffn.noise_off(), torch.no_grad():
        z, _ = layer(x)
        torch.testing.assert_close(z, conv(_pad_like_conv(layer, x)), atol=1e-5, rtol=1e-5)
    if c_in * k * k > c_out:
        assert type(layer.kernel.inverse_density).__name__ == "DiagonalNormalDensity"


@pytest.mark.parametrize(("c_in", "c_out", "k", "s"), [(2, 3, 3, 2), (1, 6, 2, 1), (1, 4, 2, 2)])
def test_from_conv2d_with_the_rotation_free_kernel(c_in: int, c_out: int, k: int, s: int) -> None:
    from survae_flowify.layers.lu_linear import LuLinear

    torch.manual_seed(1)
    conv = nn.Conv2d(c_in, c_out, k, s).double()
    layer = Conv2d.from_conv2d(conv, image_size=(5, 6), parametrization="lu")
    assert isinstance(layer.kernel.linear, LuLinear)
    torch.testing.assert_close(layer.weight, conv.weight, atol=1e-10, rtol=0)
    x = torch.randn(2, c_in, 5, 6, dtype=torch.float64)
    with ffn.noise_off(), torch.no_grad():
        z, _ = layer(x)
        torch.testing.assert_close(z, conv(_pad_like_conv(layer, x)), atol=1e-10, rtol=0)


@pytest.mark.parametrize(("parametrization", "message"), [
    ("gram", r"Conv2d: parametrization='gram' has no basis of the dropped coordinates"),
    ("bogus", r"Conv2d: parametrization must be one of 'svd', 'lu', got 'bogus'"),
])
def test_conv2d_parametrization_is_checked(parametrization: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Conv2d(2, 3, 2, 2, parametrization=parametrization)  # type: ignore[arg-type]


def test_from_conv2d_in_float64() -> None:
    conv = nn.Conv2d(2, 3, 3, 2).double()
    layer = Conv2d.from_conv2d(conv)
    assert layer.weight.dtype == torch.float64
    torch.testing.assert_close(layer.weight, conv.weight, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    ("conv", "message"),
    [(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), r"padding_mode='reflect'"),
     (nn.Conv2d(1, 2, 3, dilation=2), r"dilation=\(2, 2\)"),
     (nn.Conv2d(2, 2, 3, groups=2), r"groups=2"),
     (nn.Conv2d(1, 2, (3, 2)), r"kernel_size=\(3, 2\) \(must be square\)"),
     (nn.Conv2d(1, 2, 3, stride=(1, 2)), r"stride=\(1, 2\) \(must be square\)"),
     (nn.Conv2d(1, 2, 2, stride=3), r"stride=\(3, 3\) larger than kernel_size")],
)
def test_from_conv2d_rejects_what_it_cannot_flowify(conv: nn.Conv2d, message: str) -> None:
    with pytest.raises(ValueError, match=r"Conv2d.from_conv2d: cannot flowify Conv2d.*" + message):
        Conv2d.from_conv2d(conv)


def test_from_conv2d_needs_a_conv2d() -> None:
    with pytest.raises(TypeError, match=r"Conv2d.from_conv2d: expected a torch.nn.Conv2d, got Linear"):
        Conv2d.from_conv2d(nn.Linear(3, 2))  # type: ignore[arg-type]


def test_patch_linear_from_linear() -> None:
    linear = Linear.from_linear(nn.Linear(8, 3), inverse_density="normal")
    kernel = PatchLinear.from_linear(linear, inverse_density="diagonal")
    assert type(kernel) is PatchLinearInference and kernel.linear is linear
    z, contribution = kernel(torch.randn(2, 8, 2, 3))
    assert z.shape == (2, 3, 2, 3) and contribution.shape == (2,)


def test_sizes_are_not_cached() -> None:
    layer = _conv(1, 12, 3, 1)  # stride 1: never padded, so invertible at any size
    for size in [(3, 3), (5, 7), (8, 4)]:
        x = torch.randn(2, 1, *size, dtype=torch.float64)
        z, _ = layer(x)
        assert z.shape == (2, 12, size[0] - 2, size[1] - 2)
        torch.testing.assert_close(layer.inverse(z), x, atol=1e-10, rtol=0)


def test_inverse_mean_and_samples() -> None:
    layer = _conv(1, 2, 2, 2, image_size=4, inverse_density="diagonal")
    z = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    m1, m2 = layer.inverse(z, mean=True), layer.inverse(z, mean=True)
    assert torch.equal(m1, m2) and not torch.equal(layer.inverse(z), layer.inverse(z))
    torch.testing.assert_close(layer(m1)[0], z, atol=1e-10, rtol=0)  # right inverse, exact layer


def test_pickles_with_torch_save(tmp_path) -> None:
    layer = _conv(2, 3, 3, 2, image_size=5, hidden=8)
    torch.save(layer, tmp_path / "conv.pt")
    loaded = torch.load(tmp_path / "conv.pt", weights_only=False)
    assert type(loaded.kernel) is PatchLinearInference
    torch.testing.assert_close(loaded.weight, layer.weight)


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"Conv2d: in_channels must be a positive int, got 0"):
        Conv2d(0, 2, 3, 2)
    with pytest.raises(ValueError, match=r"Conv2d: stride \(3\) larger than kernel_size \(2\)"):
        Conv2d(1, 2, 2, 3)
    with pytest.raises(ValueError, match=r"Conv2d: kernel_size must be a positive int"):
        Conv2d(1, 2, (3, 3), 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Conv2d: noise must be one of 'normal', 'uniform'"):
        Conv2d(1, 2, 3, 2, noise="cauchy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"inverse_density must be one of"):
        Conv2d(1, 2, 3, 2, inverse_density="mixture")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Pad.*at least 3×3.*got 2×4"):
        Conv2d(1, 2, 3, 2, image_size=(2, 4))
    with pytest.raises(ValueError, match=r"PatchLinear: out_channels must be a positive int"):
        PatchLinear(3, 0)
    layer = Conv2d(2, 3, 3, 2)
    with pytest.raises(ValueError, match=r"Pad\(.*expected x of shape \(batch, 2, \*, \*\), got \(1, 3,"):
        layer(torch.randn(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"Pad.*cannot invert without the input size.*image_size"):
        layer.inverse(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"Conv2d\(2, 3, .*expected z of shape \(batch, 3, \*, \*\)"):
        layer.inverse(torch.randn(1, 4, 2, 2))
    sized = Conv2d(2, 3, 3, 2, image_size=5)
    with pytest.raises(ValueError, match=r"Pad.*expected x of shape \(batch, 2, 5, 5\), got \(1, 2, 7, 7\)"):
        sized(torch.randn(1, 2, 7, 7))
    with pytest.raises(ValueError, match=r"Conv2d.*expected z of shape \(batch, 3, 2, 2\), got \(1, 3, 3,"):
        sized.inverse(torch.randn(1, 3, 3, 3))


def test_map_densities_with_open_sizes() -> None:
    """``make_inverse_density`` over maps of any ``H × W`` (the kernel's dropped coordinates)."""
    from survae_flowify.distributions import make_inverse_density

    context = torch.randn(2, 3, 4, 5)
    for kind in ("normal", "diagonal", "conditional"):
        density = perturb_parameters(make_inverse_density(kind, (2, None, None), (3, None, None)), seed=9)
        d = density.sample(context)
        assert d.shape == (2, 2, 4, 5) and density.mean(context).shape == (2, 2, 4, 5)
        loc, log_scale = density.params(context)
        reference = torch.distributions.Normal(loc, log_scale.exp()).log_prob(d).flatten(1).sum(1)
        torch.testing.assert_close(density.log_prob(d, context), reference)
    with pytest.raises(ValueError, match=r"open \(None\) size of drop_shape needs an open size"):
        make_inverse_density("diagonal", (2, None, None), (3, 4, 4))
    with pytest.raises(ValueError, match=r"channel size of drop_shape must be given"):
        make_inverse_density("normal", (None, 4, 4), (3, None, None))


@pytest.mark.parametrize(
    ("make", "shape", "out"),
    [
        (lambda: Conv2d(1, 3, 3, 2, image_size=5, hidden=8), (0, 1, 5, 5), (0, 3, 2, 2)),
        (lambda: Conv2d(1, 4, 2, 2, image_size=(3, 4), inverse_density="diagonal"), (0, 1, 3, 4),
         (0, 4, 2, 2)),
        (lambda: Conv2d(1, 5, 2, 1, noise="uniform", image_size=3), (0, 1, 3, 3), (0, 5, 2, 2)),
        (lambda: PatchLinear(4, 1, hidden=8), (0, 4, 3, 3), (0, 1, 3, 3)),
        (lambda: PatchLinear(2, 4), (0, 2, 2, 3), (0, 4, 2, 3)),
    ],
)
def test_empty_batch(make, shape: tuple[int, ...], out: tuple[int, ...]) -> None:
    layer = make()
    z, contribution = layer(torch.randn(shape))
    assert z.shape == out and contribution.shape == (0,)
    assert layer.inverse(z).shape == shape and layer.inverse(z, mean=True).shape == shape


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        # inverse_density is checked in every regime, not only where it is used
        (lambda: Conv2d(1, 4, 2, 2, inverse_density="bogus"), ValueError,
         r"Conv2d: inverse_density must be one of 'normal', 'diagonal', 'conditional', got 'bogus'"),
        (lambda: Conv2d(1, 5, 2, 1, inverse_density="bogus"), ValueError, r"Conv2d: inverse_density"),
        (lambda: PatchLinear(2, 2, inverse_density="bogus"), ValueError, r"PatchLinear: inverse_density"),
        (lambda: PatchLinear(3, 2, noise="bogus"), ValueError, r"PatchLinear: noise must be one of"),
        (lambda: PatchLinear(3, 2, rotation="x"), ValueError, r"PatchLinear: rotation must be one of"),
        (lambda: PatchLinear(True, 2), ValueError,
         r"PatchLinear: in_channels must be a positive int, got True"),
        (lambda: PatchLinear(3, 2, bias=1), TypeError, r"PatchLinear: bias must be True or False, got 1"),
        (lambda: PatchLinear(3, 2, hidden=0), ValueError,
         r"PatchLinear: hidden must be a positive int, got 0"),
        (lambda: Conv2d(1, 2, 2, 2, bias=1), TypeError, r"Conv2d: bias must be True or False, got 1"),
        (lambda: Conv2d(1, 2, 2, 2, hidden=True), ValueError,
         r"Conv2d: hidden must be a positive int, got True"),
        (lambda: Conv2d(1, 2, 2, 2, hidden=0), ValueError, r"Conv2d: hidden must be a positive int, got 0"),
        (lambda: Conv2d(True, 2, 2, 2), ValueError, r"Conv2d: in_channels must be a positive int, got True"),
        (lambda: Conv2d(1, 2, 2, 2, image_size=(True, 3)), ValueError, r"Conv2d: image_size must be"),
        (lambda: Conv2d(1, 2, 2, 2, rotation="bogus"), ValueError, r"Conv2d: rotation must be one of"),
        (lambda: Conv2d(1, 2, 2, 2, noise="bogus"), ValueError, r"Conv2d: noise must be one of"),
        (lambda: Conv2d(1, 2, 2, True), ValueError, r"Conv2d: stride must be a positive int, got True"),
    ],
)
def test_constructor_validation(make, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        make()


def test_no_noise_scale_where_nothing_is_padded_or_shared() -> None:
    """Every parameter of a Conv2d gets a gradient: no noise scale where no noise is ever drawn
    (an image that needs no padding, a single patch per axis)."""
    layer = Conv2d(1, 5, 2, 1, image_size=2)
    assert [n for n, _ in layer.named_parameters() if n.startswith(("pad", "unfold"))] == []
    assert layer.unfold.exact and layer.pad.exact and not layer.exact
    assert [n for n, _ in Conv2d(1, 2, 3, 2, image_size=4).named_parameters()
            if n.startswith(("pad", "unfold"))] == ["pad.noise.log_scale", "unfold.log_scale"]
