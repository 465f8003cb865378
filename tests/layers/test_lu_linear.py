"""The flowified Linear with ``parametrization="lu"``: likelihoods against independent numbers.

Every reference is built here from the documented math (``T = L U`` from the packed parameter,
the Jacobian ``[[T + BC, B], [C, I]]``), from ``torch.autograd.functional.jacobian`` with
``slogdet``, or from the inverse-only oracle of :mod:`tests.oracles`; the layer's contribution
never enters a reference. Parameters are moved off their initial values first.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import survae_flowify as ffn
from survae_flowify import models
from survae_flowify.layers.conv import PatchLinear
from survae_flowify.layers.lu_linear import (
    LuIncreasingLinear,
    LuLinear,
    LuReducingLinear,
    LuSquareLinear,
)
from survae_flowify.testing import perturb_parameters
from tests.oracles import linear_gaussian_log_prob

SHAPES = [(4, 4), (7, 3), (3, 6)]


def _lu(fin: int, fout: int, seed: int = 0, **kwargs: object) -> LuLinear:
    torch.manual_seed(seed)
    layer = ffn.Linear(fin, fout, parametrization="lu", **kwargs)  # type: ignore[arg-type]
    return perturb_parameters(layer, scale=0.5, seed=seed).double()


def _shuffled(layer: LuLinear, seed: int = 3) -> LuLinear:
    """A non-identity permutation and mixed signs, so that neither is tested at its default."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.perm.copy_(torch.randperm(layer.perm.numel(), generator=g))
        layer.signs.copy_(torch.where(torch.rand(layer.rank, generator=g) < 0.5, -1.0, 1.0))
    return layer


def _t_by_hand(layer: LuLinear) -> torch.Tensor:
    """``T = L U`` from the packed parameter, written out from the module docstring."""
    p = layer.lu.detach()
    lower = torch.tril(p, -1) + torch.eye(layer.rank, dtype=p.dtype)
    upper = torch.triu(p, 1) + torch.diag(layer.signs * p.diagonal().exp())
    return lower @ upper


def _permutation_matrix(perm: torch.Tensor) -> torch.Tensor:
    """``P`` with ``(Pᵀ v)_j = v_{perm[j]}``."""
    return torch.eye(perm.numel(), dtype=torch.float64)[:, perm]


def _full_jacobian(layer: LuLinear) -> torch.Tensor:
    """The square Jacobian of the bijection behind the layer, from the documented blocks:
    ``[[T + BC, B], [C, I]] Pᵀ`` of ``x ↦ (z, y)`` (reducing) or ``P [[T + BC, B], [C, I]]`` of
    ``(x, u) ↦ z`` (increasing); ``T Pᵀ`` when square."""
    t = _t_by_hand(layer)
    p = _permutation_matrix(layer.perm)
    if layer.B is None:
        return t @ p.T
    b, c = layer.B.detach(), layer.C.detach()
    d = c.shape[0]
    blocks = torch.cat([torch.cat([t + b @ c, b], 1),
                        torch.cat([c, torch.eye(d, dtype=t.dtype)], 1)], 0)
    return blocks @ p.T if layer.in_features > layer.out_features else p @ blocks


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize(("fin", "fout", "kind", "algebra"), [
    (3, 3, LuSquareLinear, ffn.Bijection), (5, 2, LuReducingLinear, ffn.InferenceSurjection),
    (2, 5, LuIncreasingLinear, ffn.GenerativeSurjection)])
def test_regime_classes_and_pickling(fin: int, fout: int, kind: type, algebra: type) -> None:
    layer = ffn.Linear(fin, fout, parametrization="lu")
    assert isinstance(layer, kind) and isinstance(layer, algebra) and isinstance(layer, ffn.Linear)
    assert layer.exact == (fin >= fout)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    assert type(torch.load(buffer, weights_only=False)) is kind


@pytest.mark.parametrize(("fin", "fout"), [*SHAPES, (1, 1), (5, 1), (1, 4)])
def test_initial_weight_is_the_identity_block_and_parameters_are_counted_honestly(
        fin: int, fout: int) -> None:
    layer = ffn.Linear(fin, fout, parametrization="lu", bias=False)
    r, d = min(fin, fout), abs(fin - fout)
    torch.testing.assert_close(layer.weight, torch.eye(fout, fin), atol=0, rtol=0)
    own = sum(p.numel() for name, p in layer.named_parameters()
              if name in ("lu", "B", "C"))
    assert own == r * r + 2 * r * d  # L, s, U's strict upper triangle, B, C: no unused entries
    assert set(layer.state_dict()) >= {"lu", "signs", "perm"}
    assert "lower_mask" not in layer.state_dict()


@pytest.mark.parametrize(("fin", "fout"), SHAPES)
def test_weight_is_the_documented_dense_matrix_and_noise_off_forward_equals_it(
        fin: int, fout: int) -> None:
    layer = _shuffled(_lu(fin, fout, seed=1))
    full = _full_jacobian(layer)
    want = full[:fout] if fin >= fout else full[:, :fin]
    torch.testing.assert_close(layer.weight, want, atol=1e-12, rtol=0)
    x = torch.randn(6, fin, dtype=torch.float64)
    with ffn.noise_off():
        z, _ = layer(x)
    torch.testing.assert_close(z, F.linear(x, layer.weight, layer.bias), atol=1e-12, rtol=0)


@pytest.mark.parametrize("batch", [2, 40])  # T applied as two factors, then formed (r < N)
@pytest.mark.parametrize(("fin", "fout"), SHAPES)
def test_both_ways_of_applying_t_agree(fin: int, fout: int, batch: int) -> None:
    layer = _shuffled(_lu(fin, fout, seed=2))
    x = torch.randn(batch, fin, dtype=torch.float64)
    with ffn.noise_off():
        z, _ = layer(x)
    torch.testing.assert_close(z, F.linear(x, layer.weight, layer.bias), atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- likelihoods
def test_reducing_standard_normal_is_the_closed_form_linear_gaussian() -> None:
    """Layer + standard-normal base: ``(z, y) ~ N(0, I)`` and ``(z − b, y) = J x`` with the
    Jacobian written out here, so ``x ~ N(J⁻¹(−b, 0), J⁻¹J⁻ᵀ)``."""
    layer = _shuffled(_lu(7, 3, seed=4))
    jac = _full_jacobian(layer)
    shift = torch.cat([layer.bias.detach(), torch.zeros(4, dtype=torch.float64)])
    jinv = torch.linalg.inv(jac)
    mvn = torch.distributions.MultivariateNormal(-jinv @ shift, covariance_matrix=jinv @ jinv.T)
    x = 1.5 * torch.randn(9, 7, dtype=torch.float64)
    flow = ffn.Flow(ffn.StandardNormal(3), layer)
    with torch.no_grad():
        torch.testing.assert_close(flow.log_prob(x), mvn.log_prob(x), atol=1e-9, rtol=0)
        flow.eval()
        torch.testing.assert_close(flow.log_prob(x), mvn.log_prob(x), atol=1e-9, rtol=0)
    # The same number from the inverse-only oracle of tests/oracles.py.
    flow.train()
    torch.testing.assert_close(linear_gaussian_log_prob(flow, x), mvn.log_prob(x), atol=1e-9, rtol=0)


@pytest.mark.parametrize("kind", ["normal", "diagonal", "conditional"])
def test_reducing_contribution_is_autograd_log_det_plus_the_inverse_density(kind: str) -> None:
    """``V = log|det ∂(z, y)/∂x| + log p(y | z)``, the log-det from autograd and ``slogdet``."""
    layer = _shuffled(_lu(6, 2, seed=5, inverse_density=kind))
    x = torch.randn(5, 6, dtype=torch.float64)

    def zy(v: torch.Tensor) -> torch.Tensor:
        z, dropped, _, _ = layer.forward_parts(v[None])
        return torch.cat([z, dropped], 1)[0]

    jac = torch.autograd.functional.jacobian(zy, x[0])
    torch.testing.assert_close(jac, _full_jacobian(layer), atol=1e-12, rtol=0)
    log_det = torch.linalg.slogdet(jac)[1]
    out = torch.stack([zy(row) for row in x])
    z, y = out[:, :2], out[:, 2:]
    with torch.no_grad():
        want = log_det + layer.inverse_density.log_prob(y, z)
        torch.testing.assert_close(layer(x)[1], want, atol=1e-10, rtol=0)


def test_square_contribution_is_slogdet_of_the_weight_and_sign_is_kept() -> None:
    layer = _shuffled(_lu(5, 5, seed=6))
    x = torch.randn(4, 5, dtype=torch.float64)
    sign, log_abs = torch.linalg.slogdet(layer.weight)
    torch.testing.assert_close(layer(x)[1], log_abs.detach().expand(4), atol=1e-12, rtol=0)
    perm_sign = torch.linalg.det(_permutation_matrix(layer.perm))
    assert sign == perm_sign * layer.signs.prod()


def test_increasing_elbo_and_importance_weighted_bound_match_the_closed_form() -> None:
    """Normal noise ``u ~ N(0, s²I)``: ``z = W x + G u + b`` with ``G = P [[B], [I]]``, so the
    expected ELBO is ``−½‖Wx + b‖² − ½ s² ‖G‖²_F − (m/2) log 2π + log|det T| + (m − n)/2 ·
    (1 + log 2π s²)``, and the IW bound tends to the oracle's ``log p(x)``."""
    layer = _shuffled(_lu(2, 4, seed=7))
    with torch.no_grad():
        layer.noise.log_scale.fill_(math.log(0.7))
    flow = ffn.Flow(ffn.StandardNormal(4), layer)
    x = torch.randn(3, 2, dtype=torch.float64)
    t = _t_by_hand(layer)
    g = torch.cat([layer.B.detach(), torch.eye(2, dtype=torch.float64)], 0)
    g = _permutation_matrix(layer.perm) @ g
    mean_z = x @ layer.weight.detach().T + layer.bias.detach()
    s2 = 0.7**2
    expected_elbo = (-0.5 * mean_z.square().sum(1) - 0.5 * s2 * g.square().sum() - 2 * math.log(2 * math.pi)
                     + torch.linalg.slogdet(t)[1] + (1 + math.log(2 * math.pi * s2)))
    exact = linear_gaussian_log_prob(flow, x)
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([flow.log_prob(x) for _ in range(4000)]).mean(0)
        iw = flow.log_prob(x, num_samples=20_000)
    torch.testing.assert_close(elbo, expected_elbo, atol=0.05, rtol=0)
    assert (expected_elbo < exact).all()
    assert (iw <= exact + 0.02).all() and (exact - iw).max() < 0.05, (iw, exact)


# ----------------------------------------------------------------------------- inverses
@pytest.mark.parametrize(("fin", "fout"), SHAPES)
def test_inverse_identities(fin: int, fout: int) -> None:
    layer = _shuffled(_lu(fin, fout, seed=8, **({"inverse_density": "conditional"} if fin > fout else {})))
    x = torch.randn(5, fin, dtype=torch.float64)
    z, _ = layer(x)
    if fin <= fout:  # left inverse: the noise is dropped exactly
        torch.testing.assert_close(layer.inverse(z), x, atol=1e-10, rtol=0)
    else:  # right inverse for sampled and mean dropped coordinates, and the parts' round trip
        for mean in (False, True):
            torch.testing.assert_close(layer(layer.inverse(z, mean=mean))[0], z, atol=1e-10, rtol=0)
        zp, dropped, _, _ = layer.forward_parts(x)
        torch.testing.assert_close(layer.inverse_parts(zp, dropped), x, atol=1e-10, rtol=0)
        with pytest.raises(ValueError, match=r"LuReducingLinear.inverse_parts: .*\(batch, 4\)"):
            layer.inverse_parts(zp, None)


# ----------------------------------------------------------------------------- from_linear
@pytest.mark.parametrize(("fin", "fout"), SHAPES)
@pytest.mark.parametrize("awkward", [False, True])
def test_from_linear_fits_exactly(fin: int, fout: int, awkward: bool) -> None:
    """``awkward``: the leading block the layer would use without pivoting is singular (first
    column zero, or for an increasing layer the first row), so only ``perm`` can fit it."""
    torch.manual_seed(9)
    dense = nn.Linear(fin, fout).double()
    if awkward:
        with torch.no_grad():
            if fin >= fout:
                dense.weight[:, 0] = 0 if fin > fout else dense.weight[:, 0]
                dense.weight[0, 0] = 0
            else:
                dense.weight[0] = 0
    if fin == fout and awkward:
        with torch.no_grad():
            dense.weight[0].neg_()  # and a negative determinant
    layer = ffn.Linear.from_linear(dense, parametrization="lu")
    assert isinstance(layer, LuLinear)
    x = torch.randn(6, fin, dtype=torch.float64)
    with ffn.noise_off():
        z, c = layer(x)
    torch.testing.assert_close(z, dense(x), atol=1e-10, rtol=0)
    if awkward:
        assert not torch.equal(layer.perm, torch.arange(layer.perm.numel()))
    if fin == fout:
        sign, log_abs = torch.linalg.slogdet(dense.weight)
        torch.testing.assert_close(c, log_abs.detach().expand(6), atol=1e-10, rtol=0)
        assert torch.sign(torch.linalg.det(layer.weight)) == sign


@pytest.mark.parametrize(("fin", "fout"), SHAPES)
def test_from_linear_rank_deficient_weight_is_a_clear_error(fin: int, fout: int) -> None:
    bad = nn.Linear(fin, fout)
    with torch.no_grad():
        if fin >= fout:
            bad.weight[1] = 2 * bad.weight[0]
        else:
            bad.weight[:, 1] = bad.weight[:, 0]
    with pytest.raises(ValueError, match=r"from_linear: the weight .* is rank-deficient"):
        ffn.Linear.from_linear(bad, parametrization="lu")


@pytest.mark.parametrize(("fin", "fout"), SHAPES)
def test_from_linear_keeps_dtype_and_meta_device(fin: int, fout: int) -> None:
    for dtype in (torch.float64, torch.float32):
        layer = ffn.Linear.from_linear(nn.Linear(fin, fout, dtype=dtype), parametrization="lu")
        floats = [t for t in (*layer.parameters(), *layer.buffers()) if t.is_floating_point()]
        assert {t.dtype for t in floats} == {dtype} and layer.perm.dtype == torch.int64
        x = torch.randn(3, fin, dtype=dtype)
        assert layer(x)[0].dtype == layer(x)[1].dtype == dtype
    meta = ffn.Linear.from_linear(nn.Linear(fin, fout, device="meta"), parametrization="lu")
    assert {t.device.type for t in (*meta.parameters(), *meta.buffers())} == {"meta"}


def test_float32_training_path_agrees_with_float64() -> None:
    layer = _shuffled(_lu(9, 4, seed=10, inverse_density="conditional"))
    x = torch.randn(50, 9, dtype=torch.float64)
    z64, c64 = layer(x)
    z32, c32 = layer.float()(x.float())
    torch.testing.assert_close(z32.double(), z64, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(c32.double(), c64, atol=1e-3, rtol=1e-4)


# ----------------------------------------------------------------------------- eval cache
@pytest.mark.parametrize(("fin", "fout"), SHAPES)
def test_eval_cache_is_used_and_follows_an_optimizer_step(fin: int, fout: int) -> None:
    layer = _shuffled(_lu(fin, fout, seed=11))
    flow = ffn.Flow(ffn.StandardNormal(fout), layer)
    x = torch.randn(8, fin, dtype=torch.float64)

    def uncached() -> torch.Tensor:
        with torch.enable_grad(), ffn.noise_off():
            return layer(x)[0].detach()

    flow.eval()
    with torch.no_grad(), ffn.noise_off():
        first = layer(x)[0]
    assert layer.__dict__.get("_derived_cache")
    torch.testing.assert_close(first, uncached(), atol=1e-12, rtol=0)
    opt = torch.optim.SGD(flow.parameters(), lr=0.1)
    opt.zero_grad()
    (-flow.log_prob(x).mean()).backward()  # still in eval mode: the cache must not go stale
    opt.step()
    with torch.no_grad(), ffn.noise_off():
        after = layer(x)[0]
    assert not torch.allclose(after, first)
    torch.testing.assert_close(after, uncached(), atol=1e-12, rtol=0)
    with torch.no_grad():
        layer.perm.data.copy_(layer.perm.flip(0))  # a buffer edit behind the version counter
    with torch.no_grad(), ffn.noise_off():
        torch.testing.assert_close(layer(x)[0], uncached(), atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize(("build", "error", "message"), [
    (lambda: ffn.Linear(3, 3, parametrization="lu", noise="bogus"), ValueError, "Linear: noise must be"),
    (lambda: ffn.Linear(5, 3, parametrization="lu", inverse_density="laplace"), ValueError,
     "Linear: inverse_density must be"),
    (lambda: ffn.Linear(3, 5, parametrization="lu", inverse_density="bogus"), ValueError,
     "Linear: inverse_density must be"),
    (lambda: ffn.Linear(3, 3, parametrization="lu", rotation="bogus"), ValueError, "Linear: rotation"),
    (lambda: ffn.Linear(3, 3, parametrization="lu", bias=1), TypeError, "Linear: bias must be"),
    (lambda: ffn.Linear(6, 2, parametrization="lu", hidden=0), ValueError, "Linear: hidden must be"),
    (lambda: ffn.Linear(3, 3, parametrization="lu", biass=True), TypeError, "biass"),
    (lambda: ffn.Linear(3, 5, parametrization="lu", inverse_density="conditional", context_features=2),
     ValueError, "this layer drops nothing"),
    (lambda: ffn.Linear(5, 3, parametrization="lu", context_features=2), ValueError, "context_features"),
    (lambda: ffn.Linear(5, 3, parametrization="LU"), ValueError, "Linear: parametrization must be"),
    (lambda: LuSquareLinear(3, 3, parametrization="svd"), ValueError,
     "LuSquareLinear: parametrization must be 'lu'"),
])
def test_every_option_is_validated(build, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        build()


def test_bad_input_names_the_layer() -> None:
    with pytest.raises(ValueError, match=r"LuReducingLinear.*expected x of shape \(batch, 5\)"):
        ffn.Linear(5, 3, parametrization="lu")(torch.randn(2, 4))


# ----------------------------------------------------------------------------- users
def test_patch_linear_takes_an_lu_kernel() -> None:
    """``PatchLinear.from_linear`` applies the LU kernel at every position: noise off, its output
    is a 1×1 convolution with the dense weight; the contribution is ``H·W·Σ s + log p(d | z)``."""
    linear = _shuffled(_lu(6, 4, seed=12))
    patch = PatchLinear.from_linear(linear, inverse_density="normal").double()
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    with ffn.noise_off():
        z, c = patch(x)
    weight = linear.weight.detach()
    torch.testing.assert_close(z, F.conv2d(x, weight[:, :, None, None], linear.bias), atol=1e-12, rtol=0)
    rows = x.permute(0, 2, 3, 1).reshape(-1, 6)
    jac = _full_jacobian(linear)
    dropped = (rows @ jac.T)[:, 4:].reshape(2, 15, 2)
    want = 15 * torch.linalg.slogdet(jac)[1] - 0.5 * dropped.square().sum((1, 2)) - 15 * math.log(2 * math.pi)
    torch.testing.assert_close(c, want, atol=1e-10, rtol=0)
    torch.testing.assert_close(patch(patch.inverse(z))[0], z, atol=1e-10, rtol=0)


def test_fmlp_with_lu_layers_trains() -> None:
    torch.manual_seed(13)
    flow = models.fmlp(parametrization="lu", inverse_density="conditional")
    assert all(isinstance(m, LuLinear) for m in flow.modules() if isinstance(m, ffn.Linear))
    images = torch.randint(0, 256, (32, 1, 28, 28)).float()
    images[:, :, 10:18] = 255.0  # structure the flow can learn
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = -flow.log_prob(images).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0] - 100, losses
