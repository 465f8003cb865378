"""FourierConv2d (appendix H): the circular convolution it computes, log-det against autograd,
right/left inverses, closed-form and integrated densities, the locality penalty, errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import survae_flowify as ffn
from survae_flowify.layers._spectrum import Layout
from survae_flowify.layers.fourier import (
    FourierConv2d,
    IncreasingFourierConv2d,
    ReducingFourierConv2d,
    SquareFourierConv2d,
)
from survae_flowify.testing import (
    autograd_log_volume,
    check_inverse,
    check_right_inverse,
    perturb_parameters,
)
from tests.oracles import linear_gaussian_log_prob

# (in, out, (H, W)): every regime; odd and even sizes (every kind of self-conjugate frequency).
CONFIGS = [
    (2, 2, (4, 5)),
    (3, 3, (3, 3)),
    (1, 1, (6, 4)),
    (2, 2, (1, 4)),
    (3, 2, (4, 4)),
    (4, 1, (5, 2)),
    (2, 3, (5, 4)),
    (1, 3, (3, 6)),
]


def _layer(c_in: int, c_out: int, size: tuple[int, int], *, seed: int = 0, **kwargs) -> FourierConv2d:
    torch.manual_seed(seed)
    kwargs.setdefault("inverse_density", "diagonal")
    layer = FourierConv2d(c_in, c_out, image_size=size, **kwargs)
    return perturb_parameters(layer, scale=0.5, seed=seed + 1).double()


def _circular_conv_by_rolls(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``y[o, m, n] = Σ_{i, a, b} w[o, i, a, b] x[i, m + a, n + b]`` (indices mod H, W), by shifts."""
    _, _, h, w = x.shape
    out = x.new_zeros(x.shape[0], weight.shape[0], h, w)
    for a in range(h):
        for b in range(w):
            shifted = torch.roll(x, shifts=(-a, -b), dims=(2, 3))  # shifted[m, n] = x[m + a, n + b]
            out = out + torch.einsum("oi,bihw->bohw", weight[:, :, a, b], shifted)
    return out


@pytest.mark.parametrize(("c_in", "c_out", "size"), CONFIGS)
def test_output_is_the_circular_convolution_with_weight(c_in: int, c_out: int,
                                                        size: tuple[int, int]) -> None:
    layer = _layer(c_in, c_out, size)
    x = torch.randn(3, c_in, *size, dtype=torch.float64)
    with ffn.noise_off():
        z, _ = layer(x)
    assert layer.weight.shape == (c_out, c_in, *size) and layer.weight.dtype == torch.float64
    want = _circular_conv_by_rolls(x, layer.weight) + layer.bias[:, None, None]
    torch.testing.assert_close(z, want, atol=1e-12, rtol=0)
    # The same as nn.Conv2d's circular padding with a full-size kernel (the docstring's claim).
    h, w = size
    padded = F.pad(x, (0, w - 1, 0, h - 1), mode="circular")
    torch.testing.assert_close(z, F.conv2d(padded, layer.weight, layer.bias), atol=1e-12, rtol=0)


def test_identity_at_initialisation_is_a_delta_kernel() -> None:
    """``U = V = I``, ``σ = 1``: the identity map, whose circular kernel is ``δ_{oi} δ[a, b]``."""
    layer = FourierConv2d(3, 3, image_size=(4, 5)).double()
    want = torch.zeros(3, 3, 4, 5, dtype=torch.float64)
    want[range(3), range(3), 0, 0] = 1.0
    torch.testing.assert_close(layer.weight, want, atol=1e-14, rtol=0)


@pytest.mark.parametrize(("c_in", "c_out", "size"), CONFIGS)
def test_spectrum_is_hermitian_so_the_output_is_real(c_in: int, c_out: int,
                                                     size: tuple[int, int]) -> None:
    """The full complex FFT (not the real one) of the same per-frequency product: its imaginary
    part vanishes only if ``M(−f) = conj M(f)``, including the mirrored columns ``v = 0, W/2``
    of the rfft2 grid that ``irfft2`` would otherwise silently ignore."""
    layer = _layer(c_in, c_out, size)
    h, w = size
    half = layer._spectrum_matrices().detach()  # (H, W//2+1, O, I)
    full = torch.empty(h, w, c_out, c_in, dtype=half.dtype)
    full[:, : w // 2 + 1] = half
    for v in range(w // 2 + 1, w):  # columns not stored: the conjugates of stored ones
        for u in range(h):
            full[u, v] = half[(-u) % h, (-v) % w].conj()
    x = torch.randn(2, c_in, h, w, dtype=torch.float64)
    spectrum = torch.fft.fft2(x.to(half.dtype), norm="ortho")
    z_complex = torch.fft.ifft2(torch.einsum("hwoi,bihw->bohw", full, spectrum), norm="ortho")
    assert z_complex.imag.abs().max() < 1e-12
    with ffn.noise_off():
        z, _ = layer(x)
    torch.testing.assert_close(z, z_complex.real + layer.bias[:, None, None], atol=1e-12, rtol=0)


@pytest.mark.parametrize("rotation", ["cayley", "exp"])
@pytest.mark.parametrize(("c_in", "size"), [(2, (4, 5)), (3, (3, 3)), (1, (6, 4)), (2, (2, 2)),
                                            (2, (1, 3)), (2, (5, 6))])
def test_square_log_det_matches_autograd_jacobian(c_in: int, size: tuple[int, int], rotation: str) -> None:
    layer = _layer(c_in, c_in, size, seed=3, rotation=rotation)
    x = torch.randn(3, c_in, *size, dtype=torch.float64)
    _, contribution = layer(x)
    reference = autograd_log_volume(layer, x)
    assert reference.abs().min() > 0.1  # the perturbation moved the log-det away from zero
    torch.testing.assert_close(contribution, reference, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(("c_in", "c_out", "size"), [(1, 3, (3, 6)), (2, 3, (5, 4)), (1, 2, (4, 4))])
def test_increasing_with_noise_off_matches_the_embedding_volume(c_in: int, c_out: int,
                                                                size: tuple[int, int]) -> None:
    """``½ log det JᵀJ`` of the noise-free embedding equals the contribution with ``log q = 0``."""
    layer = _layer(c_in, c_out, size, seed=5)
    x = torch.randn(2, c_in, *size, dtype=torch.float64)
    with ffn.noise_off():
        _, contribution = layer(x)
        reference = autograd_log_volume(layer, x)
    torch.testing.assert_close(contribution, reference, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("density", ["normal", "diagonal", "conditional"])
@pytest.mark.parametrize(("c_in", "c_out", "size"), [(3, 2, (4, 4)), (4, 1, (5, 2)), (2, 1, (3, 4))])
def test_reducing_right_inverse(c_in: int, c_out: int, size: tuple[int, int], density: str) -> None:
    layer = _layer(c_in, c_out, size, inverse_density=density, hidden=8)
    z = torch.randn(4, c_out, *size, dtype=torch.float64)
    check_right_inverse(layer, z, atol=1e-10, rtol=1e-10)
    x1, x2 = layer.inverse(z), layer.inverse(z)  # the dropped part is sampled: different preimages
    assert (x1 - x2).abs().max() > 1e-3


@pytest.mark.parametrize("rotation", ["cayley", "exp"])
@pytest.mark.parametrize(("c_in", "c_out", "size"), [c for c in CONFIGS if c[0] <= c[1]])
def test_left_inverse(c_in: int, c_out: int, size: tuple[int, int], rotation: str) -> None:
    layer = _layer(c_in, c_out, size, rotation=rotation)
    check_inverse(layer, torch.randn(3, c_in, *size, dtype=torch.float64), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("density", ["normal", "diagonal"])
@pytest.mark.parametrize(("c_in", "c_out", "size"), [(3, 2, (4, 3)), (3, 1, (2, 4)), (2, 1, (3, 3))])
def test_reducing_density_equals_the_linear_gaussian_closed_form(
    c_in: int, c_out: int, size: tuple[int, int], density: str
) -> None:
    """A reducing layer over a standard-normal base is a linear-Gaussian model: its exact density
    (from ``inverse`` alone, no contribution) must equal ``Flow.log_prob``."""
    layer = _layer(c_in, c_out, size, inverse_density=density)
    flow = ffn.Flow(ffn.StandardNormal(c_out, *size), layer).double()
    x = torch.randn(6, c_in, *size, dtype=torch.float64)
    with torch.no_grad():
        got = flow.log_prob(x)
    torch.testing.assert_close(got, linear_gaussian_log_prob(flow, x), atol=1e-9, rtol=0)


def test_increasing_bound_lies_below_the_closed_form_and_tightens() -> None:
    """With normal noise the increasing layer is linear-Gaussian: the ELBO (averaged over noise)
    stays below the exact ``log p(x)`` and the importance-weighted bound approaches it."""
    layer = _layer(1, 2, (1, 3), seed=6)
    flow = ffn.Flow(ffn.StandardNormal(2, 1, 3), layer).double()
    torch.manual_seed(2)
    x = torch.randn(4, 1, 1, 3, dtype=torch.float64)
    exact = linear_gaussian_log_prob(flow, x)
    with torch.no_grad():
        elbo = torch.stack([flow.log_prob(x) for _ in range(400)]).mean(0)
        iw = flow.log_prob(x, num_samples=20_000, chunk_size=20_000)
    assert (elbo < exact - 0.05).all(), (elbo, exact)  # a real gap: the noise is not the posterior
    assert ((exact - iw).abs() < 0.05).all(), (iw, exact)


def test_conditional_reducing_density_integrates_to_one() -> None:
    """Importance sampling of ``∫ p(x) dx`` for a reducing layer with the (nonlinear) conditional
    inverse density: 6 dimensions (2 channels of a 1×3 image, one complex pair and DC), proposal
    ``N(0, s² I)`` wider than the model."""
    torch.manual_seed(0)
    layer = FourierConv2d(2, 1, image_size=(1, 3), inverse_density="conditional", hidden=8)
    layer = perturb_parameters(layer, scale=0.3, seed=5).double()
    flow = ffn.Flow(ffn.StandardNormal(1, 1, 3), layer).double()
    n, s = 400_000, 2.0
    gen = torch.Generator().manual_seed(1)
    x = s * torch.randn(n, 2, 1, 3, generator=gen, dtype=torch.float64)
    log_q = (-0.5 * (x / s).square() - math.log(s) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    with torch.no_grad():
        w = torch.exp(flow.log_prob(x) - log_q)
    estimate, stderr = w.mean().item(), (w.std() / math.sqrt(n)).item()
    assert stderr < 0.01, stderr
    assert abs(estimate - 1.0) < 4 * stderr + 1e-3, (estimate, stderr)


def test_regimes_and_kinds() -> None:
    square = FourierConv2d(2, 2, image_size=4)
    reducing = FourierConv2d(3, 2, image_size=4)
    increasing = FourierConv2d(2, 3, image_size=4)
    assert isinstance(square, SquareFourierConv2d) and isinstance(square, ffn.Bijection)
    assert isinstance(reducing, ReducingFourierConv2d) and isinstance(reducing, ffn.InferenceSurjection)
    assert isinstance(increasing, IncreasingFourierConv2d)
    assert isinstance(increasing, ffn.GenerativeSurjection)
    assert square.exact and reducing.exact and not increasing.exact
    assert reducing.stochastic_inverse and increasing.stochastic_forward
    assert not FourierConv2d(2, 3, image_size=4, noise="normal").bounded_noise
    assert FourierConv2d(2, 3, image_size=4, noise="uniform").bounded_noise
    assert square.in_shape == (2, 4, 4) and increasing.out_shape == (3, 4, 4)
    assert FourierConv2d(1, 1, image_size=(3, 5)).image_size == (3, 5)


@pytest.mark.parametrize(("h", "w", "self_conjugate"),
                         [(1, 1, 1), (3, 5, 1), (4, 5, 2), (3, 6, 2), (4, 6, 4), (2, 2, 4), (8, 8, 4)])
def test_layout_counts_every_real_dimension(h: int, w: int, self_conjugate: int) -> None:
    """``S`` real frequencies (u ∈ {0, H/2}, v ∈ {0, W/2} for even sizes) and ``P`` complex
    pairs with ``S + 2P = H·W``; the parameters follow (``n²`` reals per unitary, ``n(n−1)/2`` per
    rotation, one ``log σ`` per singular value and frequency)."""
    layout = Layout.of(h, w)
    assert layout.self_conjugate == self_conjugate
    assert self_conjugate + 2 * layout.pairs == h * w
    c = 3
    layer = FourierConv2d(c, c, image_size=(h, w), bias=False)
    count = sum(p.numel() for p in layer.parameters())
    pairs = (h * w - self_conjugate) // 2
    assert count == pairs * (2 * c * c + c) + self_conjugate * (2 * c * (c - 1) // 2 + c)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_window_is_where_a_same_circular_conv2d_has_its_taps(k: int) -> None:
    """A ``k × k`` ``nn.Conv2d(padding="same", padding_mode="circular")`` written as a full-size
    circular kernel lives exactly on :meth:`window`, and computes the same output."""
    h, w = 6, 5
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, k, padding="same", padding_mode="circular", bias=False).double()
    full = torch.zeros(3, 2, h, w, dtype=torch.float64)
    first = -((k - 1) // 2)  # offset of the conv's first tap
    for j in range(k):
        for i in range(k):
            full[:, :, (first + j) % h, (first + i) % w] = conv.weight.detach()[:, :, j, i]
    layer = FourierConv2d(2, 3, image_size=(h, w))
    assert torch.equal(layer.window(k), full.abs().sum((0, 1)) > 0)
    x = torch.randn(2, 2, h, w, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(_circular_conv_by_rolls(x, full), conv(x), atol=1e-12, rtol=0)


def test_locality_penalty_is_the_mass_outside_the_window_and_trains_it_away() -> None:
    layer = _layer(2, 2, (6, 6), seed=2)
    weight = layer.weight.detach()
    inside = {(a % 6, b % 6) for a in (-1, 0, 1) for b in (-1, 0, 1)}
    outside = sum(weight[:, :, a, b].square().sum() for a in range(6) for b in range(6)
                  if (a, b) not in inside)
    torch.testing.assert_close(layer.locality_penalty(3), outside, atol=1e-12, rtol=0)
    assert layer.locality_penalty(6).item() == 0.0
    start = layer.locality_penalty(3).item()
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        layer.locality_penalty(3).backward()
        optimizer.step()
    assert layer.locality_penalty(3).item() < 0.3 * start


@pytest.mark.parametrize("rotation", ["cayley", "exp"])
def test_factors_are_unitary_and_real_where_self_conjugate(rotation: str) -> None:
    """``U``, ``V`` unitary at perturbed parameters; real (imaginary part exactly 0) at the ``S``
    self-conjugate frequencies, which come last."""
    layer = _layer(3, 2, (4, 6), seed=7, rotation=rotation)
    u, v, sigma = layer._factors()
    for q in (u, v):
        eye = torch.eye(q.shape[-1], dtype=q.dtype).expand_as(q)
        torch.testing.assert_close(q.mH @ q, eye, atol=1e-12, rtol=0)
        assert q[-layer.layout.self_conjugate:].imag.abs().max() == 0
        assert (q - eye).abs().max() > 0.05  # moved off the identity
    assert (sigma > 0).all()


def test_float32_follows_float64() -> None:
    layer = _layer(3, 2, (4, 5))
    x = torch.randn(3, 3, 4, 5, dtype=torch.float64)
    with ffn.noise_off():
        z64, c64 = layer(x)
        z32, c32 = layer.float()(x.float())
    assert z32.dtype == c32.dtype == torch.float32 and layer.weight.dtype == torch.float32
    torch.testing.assert_close(z32.double(), z64, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c32.double(), c64, atol=1e-4, rtol=1e-5)


def test_wrong_image_size_or_channels_names_the_layer() -> None:
    layer = FourierConv2d(2, 3, image_size=(4, 5))
    with pytest.raises(ValueError, match=r"IncreasingFourierConv2d\(2, 3, image_size=\(4, 5\)\).*"
                                         r"expected x of shape \(batch, 2, 4, 5\), got \(1, 2, 5, 4\)"):
        layer(torch.randn(1, 2, 5, 4))
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, 2, 4, 5\), got \(1, 3, 4, 5\)"):
        layer(torch.randn(1, 3, 4, 5))
    with pytest.raises(ValueError, match=r"expected z of shape \(batch, 3, 4, 5\)"):
        layer.inverse(torch.randn(1, 3, 4, 4))


@pytest.mark.parametrize(("args", "kwargs", "error", "message"), [
    ((0, 2), {"image_size": 4}, ValueError, "in_channels must be a positive int, got 0"),
    ((2, -1), {"image_size": 4}, ValueError, "out_channels must be a positive int, got -1"),
    ((True, 2), {"image_size": 4}, ValueError, "in_channels must be a positive int, got True"),
    ((2.0, 2), {"image_size": 4}, ValueError, "in_channels must be a positive int, got 2.0"),
    ((2,), {"image_size": 4}, TypeError, "missing argument.*out_channels"),
    ((2, 2), {}, TypeError, "image_size"),
    ((2, 2), {"image_size": None}, ValueError, "image_size must be an int or \\(H, W\\)"),
    ((2, 2), {"image_size": (0, 3)}, ValueError, "image_size must be"),
    ((2, 2), {"image_size": (2, 3, 4)}, ValueError, "image_size must be"),
    ((2, 2), {"image_size": 4, "bias": 1}, TypeError, "bias must be True or False"),
    ((2, 2), {"image_size": 4, "inverse_density": "gauss"}, ValueError, "inverse_density must be one of"),
    ((2, 3), {"image_size": 4, "noise": "laplace"}, ValueError, "noise must be one of"),
    ((2, 2), {"image_size": 4, "hidden": 0}, ValueError, "hidden must be a positive int"),
    ((2, 2), {"image_size": 4, "rotation": "householder"}, ValueError, "rotation must be one of"),
    ((2, 3), {"image_size": 4, "context_features": 2}, ValueError, "this layer drops nothing"),
    ((3, 2), {"image_size": 4, "context_features": 2, "inverse_density": "normal"}, ValueError,
     "context_features=2 needs inverse_density='conditional'"),
])
def test_bad_options_are_clear_errors(args: tuple, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match="FourierConv2d.*" + message):
        FourierConv2d(*args, **kwargs)


def test_bad_window_size_is_a_clear_error() -> None:
    layer = FourierConv2d(1, 1, image_size=(4, 6))
    with pytest.raises(ValueError, match=r"FourierConv2d.locality_penalty: kernel_size must be an int "
                                         r"in \[1, 4\], got 5"):
        layer.locality_penalty(5)
    with pytest.raises(TypeError, match="kernel_size"):
        layer.locality_penalty(2.5)


def test_flow_on_digits_sized_images_trains() -> None:
    """A two-layer Fourier flow on 8×8 images: the exact log-likelihood of training data rises."""
    torch.manual_seed(0)
    transform = ffn.Sequential(FourierConv2d(1, 1, image_size=8), ffn.LeakyReLU(0.5),
                               FourierConv2d(1, 1, image_size=8))
    flow = ffn.Flow(ffn.StandardNormal(1, 8, 8), transform)
    x = 0.3 * torch.randn(64, 1, 8, 8) @ torch.randn(8, 8)  # correlated pixels: a conv can whiten
    optimizer = torch.optim.Adam(flow.parameters(), lr=0.02)
    start = flow.log_prob(x).mean().item()
    for _ in range(40):
        optimizer.zero_grad()
        (-flow.log_prob(x).mean()).backward()
        optimizer.step()
    assert flow.log_prob(x).mean().item() > start + 5.0


@pytest.mark.slow  # ~10–30 s: trains three small models for 10 steps each
def test_benchmark_quick_mode_prints_the_table() -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "fourier.py"
    result = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    rows = [line.split() for line in lines[2:5]]
    assert [row[0] for row in rows] == ["conv", "fourier", "fourier+local"], result.stdout
    assert all(math.isfinite(float(row[2])) for row in rows), result.stdout  # test bits/dim
    layer_rows = [line.split()[0] for line in lines[7:]]  # after the per-layer table's two headers
    assert lines[5].startswith("one layer") and layer_rows == ["4", "16", "16"], result.stdout
