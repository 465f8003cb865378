"""Unfold: multiplicities, orthogonal noise and its law, eq. 18 bookkeeping in closed form, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import survae_flowify as ffn
from survae_flowify.layers.unfold import Unfold, multiplicities
from survae_flowify.testing import perturb_parameters
from tests.oracles import linear_gaussian_log_prob


def _layer(k: int, s: int, noise: str = "normal", seed: int = 0) -> Unfold:
    return perturb_parameters(Unfold(k, s, noise=noise), scale=0.5, seed=seed).double()


def _noise(layer: Unfold, x: torch.Tensor) -> torch.Tensor:
    """The noise the layer adds, as patches ``(B, C·k², L)``."""
    with torch.no_grad():
        z, _ = layer(x)
    return (z - F.unfold(x, layer.kernel_size, stride=layer.stride).view(z.shape)).flatten(2)


def _fold(layer: Unfold, v: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.fold(v, size, layer.kernel_size, stride=layer.stride)


def test_multiplicities_of_known_cases() -> None:
    row_3_2 = torch.tensor([1.0, 1, 2, 1, 1])
    torch.testing.assert_close(multiplicities((5, 5), 3, 2), torch.outer(row_3_2, row_3_2))
    row_2_1 = torch.tensor([1.0, 2, 2, 1])
    torch.testing.assert_close(multiplicities((4, 4), 2, 1), torch.outer(row_2_1, row_2_1))
    torch.testing.assert_close(multiplicities((4, 6), 2, 2), torch.ones(4, 6))
    row_3_1 = torch.tensor([1.0, 2, 3, 3, 2, 1])
    torch.testing.assert_close(multiplicities((6, 6), 3, 1), torch.outer(row_3_1, row_3_1))
    # Every pixel lies in at least one patch when the kernel tiles the image.
    assert multiplicities((7, 9), 3, 2).min() == 1


@pytest.mark.parametrize(("k", "s"), [(1, 1), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (4, 3), (5, 2)])
def test_multiplicities_are_fold_of_unfold(k: int, s: int) -> None:
    for size in [(k, k), (k + s, k + 3 * s), (k + 4 * s, k + 2 * s)]:
        ones = torch.ones(1, 1, *size, dtype=torch.float64)
        want = F.fold(F.unfold(ones, k, stride=s), size, k, stride=s)[0, 0]
        got = multiplicities(size, k, s, like=ones)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize(("k", "s", "size"), [(3, 2, (5, 7)), (2, 1, (4, 4)), (2, 2, (4, 6))])
def test_noise_off_is_torch_unfold(k: int, s: int, size: tuple[int, int]) -> None:
    layer = _layer(k, s)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    with ffn.noise_off():
        z, contribution = layer(x)
    out = ((size[0] - k) // s + 1, (size[1] - k) // s + 1)
    assert z.shape == (2, 3 * k * k, *out)
    torch.testing.assert_close(z.flatten(2), F.unfold(x, k, stride=s), atol=0, rtol=0)
    # Channel order (c, i, j): channel c·k² + i·k + j of patch (0, 0) is pixel (c, i, j).
    assert z[1, 2 * k * k + (k - 1) * k + 1, 0, 0] == x[1, 2, k - 1, 1]
    half_log_n = 0.5 * 3 * multiplicities(size, k, s).log().sum().item()
    torch.testing.assert_close(contribution, torch.full((2,), half_log_n, dtype=torch.float64))


@pytest.mark.parametrize("noise", ["normal", "uniform"])
@pytest.mark.parametrize(("k", "s", "size"), [(3, 2, (5, 7)), (2, 1, (4, 4)), (3, 1, (5, 5))])
def test_noise_is_orthogonal_to_the_diagonal(noise: str, k: int, s: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    layer = _layer(k, s, noise)
    x = torch.randn(4, 2, *size, dtype=torch.float64)
    u = _noise(layer, x)
    # The copies of every pixel sum to N·x: the noise sums to 0 over them ...
    assert _fold(layer, u, size).abs().max() < 1e-12
    # ... pixels in one patch only get none, the others do.
    n = multiplicities(size, k, s)
    sq = _fold(layer, u.square(), size)
    assert (sq[..., n == 1] == 0).all() and (sq[..., n > 1] > 0).all()
    # and the inverse (the mean over the copies) returns x.
    z, _ = layer(x)
    torch.testing.assert_close(layer.inverse(z), x, atol=1e-12, rtol=0)


def _ks_statistic(samples: torch.Tensor, cdf) -> float:
    sorted_, _ = samples.double().sort()
    n = sorted_.numel()
    f = cdf(sorted_)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - f
    lower = f - torch.arange(0, n, dtype=torch.float64) / n
    return max(upper.max().item(), lower.max().item())


def _ks_critical(n: int) -> float:
    return 1.95 / math.sqrt(n)  # α = 0.001


@pytest.mark.parametrize(("k", "s", "size"), [(3, 2, (5, 5)), (2, 1, (4, 4)), (3, 1, (5, 5))])
def test_normal_noise_squared_norm_is_chi_square(k: int, s: int, size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    layer = _layer(k, s, seed=2)
    scale = layer.log_scale.exp().item()
    batch = 4000
    u = _noise(layer, torch.zeros(batch, 1, *size, dtype=torch.float64))
    sq = _fold(layer, u.square(), size)[:, 0] / scale**2  # (B, H, W)
    n = multiplicities(size, k, s)
    for dof in sorted({int(v) - 1 for v in n.unique() if v > 1}):
        samples = sq[:, n == dof + 1][:, 0]  # one pixel: independent across the batch
        assert abs(samples.mean().item() - dof) < 4 * math.sqrt(2 * dof / batch), dof
        stat = _ks_statistic(samples, lambda r, m=dof: torch.special.gammainc(r.new_full((), m / 2), r / 2))
        assert stat < _ks_critical(batch), (dof, stat)


@pytest.mark.parametrize(("k", "s", "size"), [(3, 2, (5, 5)), (2, 1, (4, 4)), (3, 1, (5, 5))])
def test_uniform_noise_radius_law(k: int, s: int, size: tuple[int, int]) -> None:
    torch.manual_seed(2)
    layer = _layer(k, s, "uniform", seed=3)
    scale = layer.log_scale.exp().item()
    batch = 4000
    u = _noise(layer, torch.zeros(batch, 1, *size, dtype=torch.float64))
    radius = _fold(layer, u.square(), size)[:, 0].sqrt() / scale
    n = multiplicities(size, k, s)
    assert radius.max() <= 1 + 1e-12
    for dof in sorted({int(v) - 1 for v in n.unique() if v > 1}):
        samples = radius[:, n == dof + 1][:, 0]
        stat = _ks_statistic(samples, lambda r, m=dof: r.clamp(0, 1) ** m)
        assert stat < _ks_critical(batch), (dof, stat)


@pytest.mark.parametrize("noise", ["normal", "uniform"])
def test_noise_covariance_over_the_copies(noise: str) -> None:
    """Centre pixel of a 4×4 image under k=2, s=1 lies in N = 4 patches: its noise has covariance
    ``c·σ²(I − 11ᵀ/N)``, ``c = 1`` (normal) or ``1/(m + 2)`` (uniform on the m-ball, m = N − 1)."""
    torch.manual_seed(3)
    layer = _layer(2, 1, noise, seed=4)
    scale = layer.log_scale.exp().item()
    batch = 40_000
    u = _noise(layer, torch.zeros(batch, 1, 4, 4, dtype=torch.float64)).view(batch, 2, 2, 3, 3)
    # Pixel (1, 1) is entry (i, j) of the patch starting at (1 − i, 1 − j).
    copies = torch.stack([u[:, i, j, 1 - i, 1 - j] for i in range(2) for j in range(2)], 1)
    cov = copies.T @ copies / batch
    factor = 1.0 if noise == "normal" else 1.0 / 5
    want = factor * scale**2 * (torch.eye(4, dtype=torch.float64) - 0.25)
    torch.testing.assert_close(cov, want, atol=0.03 * factor * scale**2, rtol=0)


def _exact_after_unfold(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``log p(x)`` for ``v = unfold(x) ⊕ noise`` under a standard-normal ``v``: per pixel,
    ``√N·x_p`` is standard normal along the diagonal and the complement integrates to 1."""
    y = x * n.sqrt()
    return (torch.distributions.Normal(0.0, 1.0).log_prob(y) + 0.5 * n.log()).flatten(1).sum(1)


@pytest.mark.parametrize(("k", "s", "size"), [(3, 2, (5, 5)), (2, 1, (4, 4)), (2, 2, (4, 4))])
def test_closed_form_after_unfold(k: int, s: int, size: tuple[int, int]) -> None:
    """Base N(0, I) right after Unfold: the noise posterior is N(0, I) on the complement of the
    diagonal, so ``E[ELBO] = log p(x) − Σ_p m_p (½(σ² − 1) − log σ)``, exact for k = s."""
    torch.manual_seed(4)
    layer = Unfold(k, s, init_scale=1.15).double()  # a visible gap, weights of moderate variance
    out = (size[0] - k) // s + 1
    flow = ffn.Flow(ffn.StandardNormal(2 * k * k, out, out), layer).double()
    x = torch.randn(3, 2, *size, dtype=torch.float64)
    n = multiplicities(size, k, s).double()
    exact = _exact_after_unfold(x, n)
    torch.testing.assert_close(linear_gaussian_log_prob(flow, x), exact, atol=1e-9, rtol=0)
    sigma = 1.15
    gap = 2 * (n - 1).sum().item() * (0.5 * (sigma**2 - 1) - math.log(sigma))
    with torch.no_grad():
        if layer.exact:
            torch.testing.assert_close(flow.log_prob(x), exact, atol=1e-10, rtol=0)
            return
        elbo = flow.log_prob(x.repeat(10_000, 1, 1, 1)).view(10_000, 3).mean(0)
        assert gap > 0.05 and (elbo < exact).all()
        torch.testing.assert_close(exact - elbo, torch.full((3,), gap, dtype=torch.float64),
                                   atol=0.05, rtol=0)
        iw = flow.log_prob(x, num_samples=20_000, chunk_size=20_000)
        assert (exact - iw).abs().max() < 0.02, (iw, exact)


@pytest.mark.parametrize(("k", "s", "size"), [(3, 2, (5, 5)), (2, 1, (4, 4))])
def test_uniform_iw_bound_converges_to_the_likelihood_on_the_ball(
    k: int, s: int, size: tuple[int, int]
) -> None:
    """Base N(0, I) after uniform-noise Unfold: the IW bound tends to
    ``log p(x) + Σ_p log P(χ²_{m_p} ≤ σ²)`` (the posterior N(0, I) restricted to the ball)."""
    torch.manual_seed(5)
    layer = _layer(k, s, "uniform", seed=6)
    out = (size[0] - k) // s + 1
    flow = ffn.Flow(ffn.StandardNormal(k * k, out, out), layer).double()
    x = torch.randn(2, 1, *size, dtype=torch.float64)
    n = multiplicities(size, k, s).double()
    sigma = layer.log_scale.exp().detach()
    m = n[n > 1] - 1
    limit = _exact_after_unfold(x, n) + torch.special.gammainc(m / 2, sigma**2 / 2).log().sum()
    with torch.no_grad():
        iw = flow.log_prob(x, num_samples=40_000, chunk_size=20_000)
    assert (_exact_after_unfold(x, n) - limit > 0.2).all()
    torch.testing.assert_close(iw, limit, atol=0.02, rtol=0)


def test_exact_flag() -> None:
    assert Unfold(2, 2).exact and not Unfold(2, 2).stochastic_forward
    assert not Unfold(3, 2).exact and Unfold(3, 2).stochastic_forward
    assert Unfold(3, 2, noise="uniform").bounded_noise and not Unfold(2, 2, noise="uniform").bounded_noise
    layer = perturb_parameters(Unfold(2, 2), seed=1)
    x = torch.randn(2, 1, 4, 4)
    z1, c1 = layer(x)
    z2, c2 = layer(x)
    assert torch.equal(z1, z2) and torch.equal(c1, torch.zeros(2)) and torch.equal(c2, c1)


def test_sizes_are_not_cached() -> None:
    layer = _layer(3, 2)
    for size in ((5, 5), (7, 9), (3, 3), (9, 5)):
        x = torch.randn(2, 1, *size, dtype=torch.float64)
        z, _ = layer(x)
        assert z.shape[2:] == ((size[0] - 3) // 2 + 1, (size[1] - 3) // 2 + 1)
        torch.testing.assert_close(layer.inverse(z), x, atol=1e-12, rtol=0)


def test_float32_and_float64_follow_the_input() -> None:
    layer = Unfold(3, 2, noise="uniform")
    for dtype in (torch.float32, torch.float64):
        z, c = layer.to(dtype)(torch.randn(2, 1, 5, 5, dtype=dtype))
        assert z.dtype == c.dtype == dtype


def test_errors() -> None:
    with pytest.raises(ValueError, match=r"Unfold.*stride \(3\) larger than kernel_size \(2\)"):
        Unfold(2, 3)
    with pytest.raises(ValueError, match=r"Unfold.*kernel_size must be a positive int"):
        Unfold(-1, 1)
    with pytest.raises(ValueError, match=r"Unfold.*noise must be one of .normal., .uniform."):
        Unfold(2, 1, noise="gauss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Unfold.*in_channels must be a positive int"):
        Unfold(2, 1, in_channels=0)
    with pytest.raises(ValueError, match=r"Unfold.*does not tile an image of size \(6, 5\).*pad first"):
        Unfold(3, 2)(torch.randn(1, 1, 6, 5))
    with pytest.raises(ValueError, match=r"Unfold.*does not tile an image of size \(2, 2\)"):
        Unfold(3, 2)(torch.randn(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"Unfold.*expected x of shape \(batch, 2, \*, \*\), got \(1, 1,"):
        Unfold(3, 2, in_channels=2)(torch.randn(1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"Unfold.*expected z with a multiple of 9 channels"):
        Unfold(3, 2).inverse(torch.randn(1, 10, 2, 2))
    with pytest.raises(ValueError, match=r"Unfold.*expected z of shape \(batch, 18, \*, \*\)"):
        Unfold(3, 2, in_channels=2).inverse(torch.randn(1, 9, 2, 2))


def test_no_noise_scale_when_no_pixel_is_shared() -> None:
    """``stride == kernel_size`` is a permutation with no noise: no parameter that never gets a
    gradient (DDP would need ``find_unused_parameters``)."""
    assert list(Unfold(2, 2).parameters()) == []
    assert len(list(Unfold(3, 2).parameters())) == 1


@pytest.mark.parametrize(("k", "s", "noise"), [(3, 2, "normal"), (2, 2, "normal"), (2, 1, "uniform")])
def test_empty_batch(k: int, s: int, noise: str) -> None:
    layer = Unfold(k, s, noise=noise, in_channels=2)
    z, contribution = layer(torch.randn(0, 2, 5 if k == 3 else 4, 4 if k == 2 else 5))
    out_h = (z.shape[2], z.shape[3])
    assert z.shape[:2] == (0, 2 * k * k) and contribution.shape == (0,)
    assert layer.inverse(torch.randn(0, 2 * k * k, *out_h)).shape[:2] == (0, 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"kernel_size": 2, "stride": True}, ValueError, r"Unfold: stride must be a positive int, got True"),
        ({"in_channels": True}, ValueError, r"Unfold: in_channels must be a positive int, got True"),
        ({"init_scale": 0}, ValueError, r"Unfold: init_scale must be a finite number > 0.0, got 0"),
        ({"init_scale": float("inf")}, ValueError, r"Unfold: init_scale must be a finite number"),
        ({"noise": None}, ValueError, r"Unfold: noise must be one of 'normal', 'uniform', got None"),
    ],
)
def test_constructor_validation(kwargs: dict, error: type, message: str) -> None:
    args = {"kernel_size": 3, "stride": 2} if "kernel_size" not in kwargs else {}
    with pytest.raises(error, match=message):
        Unfold(**args, **kwargs)


def test_fixed_image_size() -> None:
    """``image_size`` fixes the input size; one patch per axis shares no pixel: exact, no noise."""
    single = Unfold(2, 1, image_size=2)
    assert single.exact and list(single.parameters()) == []
    x = torch.randn(3, 1, 2, 2)
    z, contribution = single(x)
    assert torch.equal(z.flatten(1), x.flatten(1)) and torch.equal(contribution, torch.zeros(3))
    sized = Unfold(3, 2, in_channels=2, image_size=(5, 7))
    assert not sized.exact and sized.in_shape == (2, 5, 7) and sized.out_shape == (18, 2, 3)
    with pytest.raises(ValueError, match=r"Unfold.*expected x of shape \(batch, 2, 5, 7\)"):
        sized(torch.randn(1, 2, 7, 7))
    with pytest.raises(ValueError, match=r"Unfold.*does not tile an image of size \(6, 6\)"):
        Unfold(3, 2, image_size=6)
    with pytest.raises(ValueError, match=r"Unfold: image_size must be"):
        Unfold(3, 2, image_size=(True, 5))


@pytest.mark.parametrize(
    ("k", "s", "size"), [(3, 2, (7, 9)), (2, 1, (4, 5)), (2, 2, (4, 6)), (4, 3, (7, 10))]
)
def test_patches_and_fold_are_torch_unfold_and_fold(k: int, s: int, size: tuple[int, int]) -> None:
    """The batch-last :func:`patches`/:func:`fold` against ``F.unfold``/``F.fold``, values exactly,
    and their gradients (the custom backward of the patches is the fold) by ``gradcheck``."""
    from survae_flowify.layers.unfold import fold, patches

    x = torch.randn(3, 2, *size, dtype=torch.float64)
    v = patches(x, k, s)
    torch.testing.assert_close(v.flatten(2), F.unfold(x, k, stride=s), atol=0, rtol=0)
    y = torch.randn_like(v)
    torch.testing.assert_close(fold(y, size, k, s), F.fold(y.flatten(2), size, k, stride=s),
                               atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(lambda t: patches(t, k, s), (x.requires_grad_(),))
    assert torch.autograd.gradgradcheck(lambda t: patches(t, k, s), (x,))
    assert torch.autograd.gradcheck(lambda t: fold(t, size, k, s), (y.requires_grad_(),))
