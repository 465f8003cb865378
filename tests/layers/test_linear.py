"""The flowified Linear: dense equivalence, SVD construction, eval caching, rotations."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import survae_flowify as ffn
from survae_flowify.layers.conv import PatchLinear
from survae_flowify.layers.linear import IncreasingLinear, ReducingLinear, SquareLinear, SvdLinear
from survae_flowify.layers.rotations import Rotation
from survae_flowify.testing import perturb_parameters
from tests.oracles import linear_gaussian_log_prob

ROTATIONS = ["householder", "cayley", "exp"]
SHAPES = [(4, 4), (6, 3), (3, 6)]


@pytest.mark.parametrize(("fin", "fout", "kind"), [
    (3, 3, SquareLinear), (5, 2, ReducingLinear), (2, 5, IncreasingLinear)])
def test_regime_classes(fin: int, fout: int, kind: type) -> None:
    layer = ffn.Linear(fin, fout)
    assert isinstance(layer, ffn.Linear) and isinstance(layer, kind)
    expected = {SquareLinear: ffn.Bijection, ReducingLinear: ffn.InferenceSurjection,
                IncreasingLinear: ffn.GenerativeSurjection}[kind]
    assert isinstance(layer, expected)
    assert layer.exact == (fin >= fout)
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    assert type(torch.load(buffer, weights_only=False)) is kind


@pytest.mark.parametrize("rotation", ROTATIONS)
@pytest.mark.parametrize(("fin", "fout"), SHAPES)
def test_noise_off_forward_equals_dense_layer(fin: int, fout: int, rotation: str) -> None:
    torch.manual_seed(0)
    layer = perturb_parameters(ffn.Linear(fin, fout, rotation=rotation)).double()
    x = torch.randn(7, fin, dtype=torch.float64)
    with ffn.noise_off():
        z, _ = layer(x)
    torch.testing.assert_close(z, F.linear(x, layer.weight, layer.bias), atol=1e-12, rtol=0)
    singular = torch.linalg.svdvals(layer.weight)
    torch.testing.assert_close(singular.sort().values, layer.log_sigma.exp().sort().values)


@pytest.mark.parametrize("rotation", ROTATIONS)
@pytest.mark.parametrize(("fin", "fout"), SHAPES)
@pytest.mark.parametrize("negative_det", [False, True])
def test_from_linear_keeps_the_function(fin: int, fout: int, rotation: str, negative_det: bool) -> None:
    torch.manual_seed(1)
    dense = nn.Linear(fin, fout).double()
    if negative_det:
        with torch.no_grad():
            dense.weight[0].neg_()  # flips det of a square weight; flips a singular vector otherwise
    layer = ffn.Linear.from_linear(dense, rotation=rotation)
    x = torch.randn(5, fin, dtype=torch.float64)
    with ffn.noise_off():
        z, _ = layer(x)
    torch.testing.assert_close(z, dense(x), atol=1e-10, rtol=0)
    if fin == fout:
        assert torch.sign(torch.linalg.det(layer.weight)) == torch.sign(torch.linalg.det(dense.weight))


def test_from_linear_identity_and_rank_deficient() -> None:
    eye = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        eye.weight.copy_(torch.eye(3))
    layer = ffn.Linear.from_linear(eye.double())
    torch.testing.assert_close(layer.weight, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    bad = nn.Linear(3, 2)
    with torch.no_grad():
        bad.weight.zero_()
    with pytest.raises(ValueError, match="rank-deficient"):
        ffn.Linear.from_linear(bad)
    with pytest.raises(TypeError, match=r"torch\.nn\.Linear"):
        ffn.Linear.from_linear(nn.Conv2d(1, 1, 1))


@pytest.mark.parametrize(("fin", "fout"), SHAPES)
def test_eval_cache_is_used_and_invalidated(fin: int, fout: int) -> None:
    torch.manual_seed(2)
    layer = perturb_parameters(ffn.Linear(fin, fout)).double()
    x = torch.randn(4, fin, dtype=torch.float64)
    torch.manual_seed(0)
    train_out = layer(x)
    layer.eval()
    with torch.no_grad():
        torch.manual_seed(0)
        eval_out = layer(x)
        assert layer.__dict__.get("_derived_cache")
        torch.testing.assert_close(eval_out, train_out, atol=1e-10, rtol=0)
        layer.log_sigma.add_(0.5)  # parameters change in eval mode: the cache must not be reused
        torch.manual_seed(0)
        changed = layer(x)
    assert not torch.allclose(changed[0], eval_out[0])
    layer.train()
    torch.manual_seed(0)
    torch.testing.assert_close(layer(x)[0], changed[0], atol=1e-10, rtol=0)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.eval()
    with torch.no_grad():
        layer(x)
        perturb_parameters(layer, seed=5)
        layer.load_state_dict(state)
        torch.manual_seed(0)
        torch.testing.assert_close(layer(x)[0], changed[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("rotation", ROTATIONS)
@pytest.mark.parametrize("n", [1, 2, 7])
def test_rotations_are_orthogonal_and_apply_consistently(rotation: str, n: int) -> None:
    torch.manual_seed(3)
    rot = perturb_parameters(Rotation(n, rotation), scale=1.0).double()
    q = rot.matrix()
    torch.testing.assert_close(q.T @ q, torch.eye(n, dtype=torch.float64), atol=1e-12, rtol=0)
    x = torch.randn(4, n, dtype=torch.float64)
    torch.testing.assert_close(rot.rotate(x), x @ q.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(rot.rotate_t(x), x @ q, atol=1e-12, rtol=0)


@pytest.mark.parametrize("rotation", ROTATIONS)
def test_set_matrix_reaches_both_determinants(rotation: str) -> None:
    torch.manual_seed(4)
    rot = Rotation(5, rotation).double()
    for sign in (1.0, -1.0):
        q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
        if torch.linalg.det(q) * sign < 0:
            q[:, 0].neg_()
        rot.set_matrix(q)
        torch.testing.assert_close(rot.matrix(), q, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="orthogonal"):
        rot.set_matrix(torch.ones(5, 5, dtype=torch.float64))


def test_reducing_density_kinds_and_float32() -> None:
    for kind in ("normal", "diagonal", "conditional"):
        layer = perturb_parameters(ffn.Linear(6, 2, inverse_density=kind))
        x = torch.randn(3, 6)
        z, c = layer(x)
        assert z.dtype == c.dtype == torch.float32 and c.shape == (3,)
        back = layer.inverse(z, mean=True)
        torch.testing.assert_close(layer(back)[0], z, atol=1e-4, rtol=1e-4)


def test_square_stack_matches_closed_form_in_float64_after_training_steps() -> None:
    """Exact to 1e-8 after a few optimiser steps (not just at initialisation)."""
    torch.manual_seed(5)
    t = ffn.Sequential(ffn.Linear(3, 3), ffn.Linear(3, 3, rotation="cayley"))
    flow = ffn.Flow(ffn.StandardNormal(3), t).double()
    opt = torch.optim.Adam(flow.parameters(), lr=0.05)
    data = torch.randn(64, 3, dtype=torch.float64) @ torch.tensor(
        [[2.0, 0, 0], [0.5, 0.3, 0], [-1, 0.2, 1.5]], dtype=torch.float64)
    for _ in range(20):
        opt.zero_grad()
        (-flow.log_prob(data).mean()).backward()
        opt.step()
    x = data[:5]
    exact = linear_gaussian_log_prob(flow, x)
    with torch.no_grad():
        torch.testing.assert_close(flow.log_prob(x), exact, atol=1e-8, rtol=0)


def test_bad_configuration_errors() -> None:
    with pytest.raises(ValueError, match="Linear: in_features must be a positive int, got 0"):
        ffn.Linear(0, 3)
    with pytest.raises(ValueError, match="rotation must be one of"):
        ffn.Linear(3, 3, rotation="givens")
    with pytest.raises(ValueError, match="inverse_density must be one of"):
        ffn.Linear(4, 2, inverse_density="laplace")
    with pytest.raises(ValueError, match="noise must be"):
        ffn.Linear(2, 4, noise="cauchy")
    with pytest.raises(ValueError, match=r"IncreasingLinear.*expected x of shape \(batch, 2\)"):
        ffn.Linear(2, 4)(torch.randn(3, 3))


@pytest.mark.parametrize(("fin", "fout"), SHAPES)
def test_gram_parametrization_gives_the_svd_likelihood(fin: int, fout: int) -> None:
    """Same W, same standard-normal densities: the SVD and Gram layers agree to float precision."""
    torch.manual_seed(6)
    svd = perturb_parameters(ffn.Linear(fin, fout)).double()
    dense = nn.Linear(fin, fout).double()
    with torch.no_grad():
        dense.weight.copy_(svd.weight)
        dense.bias.copy_(svd.bias)
    gram = ffn.Linear.from_linear(dense, parametrization="gram")
    assert type(gram).__name__.startswith("Gram") and isinstance(gram, ffn.Linear)
    x = torch.randn(6, fin, dtype=torch.float64)
    with ffn.noise_off():
        (z1, c1), (z2, c2) = svd(x), gram(x)
    torch.testing.assert_close(z1, z2, atol=1e-10, rtol=0)
    torch.testing.assert_close(c1, c2, atol=1e-10, rtol=0)
    torch.testing.assert_close(gram.inverse(z2, mean=True), svd.inverse(z1, mean=True),
                               atol=1e-9, rtol=0)


def test_gram_parametrization_rejects_what_it_cannot_express() -> None:
    with pytest.raises(ValueError, match="inverse_density='normal' or 'conditional'"):
        ffn.Linear(4, 2, parametrization="gram", inverse_density="diagonal")
    with pytest.raises(ValueError, match="noise='normal'"):
        ffn.Linear(2, 4, parametrization="gram", noise="uniform")
    with pytest.raises(ValueError, match="parametrization must be"):
        ffn.Linear(4, 2, parametrization="qr")
    gram = ffn.Linear(4, 2, parametrization="gram")
    assert not hasattr(gram, "forward_parts") and not hasattr(gram, "inverse_parts")


def test_gram_eval_fast_path_matches_training_path() -> None:
    torch.manual_seed(7)
    layer = perturb_parameters(ffn.Linear(7, 3, parametrization="gram")).double()
    x = torch.randn(5, 7, dtype=torch.float64)
    z_train, c_train = layer(x)
    layer.eval()
    with torch.no_grad():
        z_eval, c_eval = layer(x)
        assert layer.__dict__.get("_derived_cache")
        layer.weight_param.mul_(1.5)  # changed in eval mode: the cache must not be reused
        assert not torch.allclose(layer(x)[1], c_eval)
    torch.testing.assert_close(z_eval, z_train.detach(), atol=1e-10, rtol=0)
    torch.testing.assert_close(c_eval, c_train.detach(), atol=1e-10, rtol=0)


# ----------------------------------------------------------------------------- issue 8, items 6, 8, 9, 21
@pytest.mark.parametrize("parametrization", ["svd", "gram"])
@pytest.mark.parametrize(("fin", "fout"), SHAPES)
def test_from_linear_keeps_device_and_dtype(fin: int, fout: int, parametrization: str) -> None:
    for dtype in (torch.float64, torch.float32):
        layer = ffn.Linear.from_linear(nn.Linear(fin, fout, dtype=dtype), parametrization=parametrization)
        assert {t.dtype for t in (*layer.parameters(), *layer.buffers())} == {dtype}
    meta = nn.Linear(fin, fout, device="meta", dtype=torch.float64)
    layer = ffn.Linear.from_linear(meta, parametrization=parametrization)
    tensors = [*layer.parameters(), *layer.buffers()]
    assert {t.device.type for t in tensors} == {"meta"} and {t.dtype for t in tensors} == {torch.float64}
    assert type(layer) is type(ffn.Linear(fin, fout, parametrization=parametrization))


@pytest.mark.parametrize("seed", range(20))
def test_gram_nearly_dependent_rows_in_float32(seed: int) -> None:
    """Rows 1e-4 apart: Cholesky of W Wᵀ failed in float32 for half of these seeds. The QR route
    gives the SVD likelihood, computed here in float64 from ``torch.linalg.svd`` (not the layer's)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 64, generator=g)
    w[-1] = w[-2] + 1e-4 * torch.randn(64, generator=g)
    dense = nn.Linear(64, 8)
    with torch.no_grad():
        dense.weight.copy_(w)
    layer = ffn.Linear.from_linear(dense, parametrization="gram")
    x = torch.randn(5, 64, generator=g)
    _, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    x64 = x.double()
    drop_sq = x64.square().sum(1) - (x64 @ vh.T).square().sum(1)
    want = torch.log(s).sum() - 0.5 * drop_sq - 0.5 * 56 * math.log(2 * math.pi)
    _, c_train = layer(x)
    torch.testing.assert_close(c_train.double(), want, atol=2e-2, rtol=1e-3)
    layer.eval()
    with torch.no_grad():
        z_eval, c_eval = layer(x)
        back = layer.inverse(z_eval, mean=True)
    torch.testing.assert_close(c_eval.double(), want, atol=2e-2, rtol=1e-3)
    torch.testing.assert_close(layer(back)[0], z_eval, atol=1e-3, rtol=1e-3)  # right inverse


def test_gram_layers_do_not_claim_the_svd_parts() -> None:
    gram = ffn.Linear(8, 3, parametrization="gram")
    assert isinstance(gram, ffn.Linear) and not isinstance(gram, SvdLinear)
    assert not hasattr(gram, "forward_parts") and not hasattr(gram, "inverse_parts")
    with pytest.raises(TypeError, match=r"PatchLinear\w*: needs a Linear with parametrization='svd'"):
        PatchLinear.from_linear(gram)
    svd = ffn.Linear(8, 3, inverse_density="normal")
    assert isinstance(PatchLinear.from_linear(svd), PatchLinear)


def test_gram_singular_weight_gives_a_clear_error() -> None:
    square = ffn.Linear(3, 3, parametrization="gram")
    reducing = ffn.Linear(4, 2, parametrization="gram")
    with torch.no_grad():
        square.weight_param.zero_()
        reducing.weight_param[1] = reducing.weight_param[0]
    with pytest.raises(ValueError, match="GramSquareLinear: the weight is singular"):
        square.inverse(torch.randn(2, 3))
    with pytest.raises(ValueError, match="GramReducingLinear: the weight is singular"):
        reducing.inverse(torch.randn(2, 2))
    bad = nn.Linear(4, 2)
    with torch.no_grad():
        bad.weight[1] = bad.weight[0]
    with pytest.raises(ValueError, match="rank-deficient"):
        ffn.Linear.from_linear(bad, parametrization="gram")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gram_rows_equal_up_to_rounding_count_as_singular(seed: int) -> None:
    """Two equal rows leave ``|R_22|`` of rounding size, not zero, in the thin QR (4.8e-7, 3.7e-9,
    4.2e-8 for these seeds): the rank test must be relative, or the inverse divides by noise."""
    row = torch.randn(4, generator=torch.Generator().manual_seed(seed))
    reducing = ffn.Linear(4, 2, parametrization="gram")
    increasing = ffn.Linear(2, 4, parametrization="gram")
    with torch.no_grad():
        reducing.weight_param.copy_(torch.stack([row, row]))
        increasing.weight_param.copy_(torch.stack([row, row], 1))
    with pytest.raises(ValueError, match="GramReducingLinear: the weight is singular"):
        reducing.inverse(torch.randn(2, 2))
    with pytest.raises(ValueError, match="GramIncreasingLinear: the weight is singular"):
        increasing.inverse(torch.randn(2, 4))


@pytest.mark.parametrize(("build", "error", "message"), [
    (lambda: ffn.Linear(3, 3, noise="bogus"), ValueError, "Linear: noise must be one of"),
    (lambda: ffn.Linear(3, 3, inverse_density="bogus"), ValueError, "Linear: inverse_density must be"),
    (lambda: ffn.Linear(2, 4, inverse_density="bogus"), ValueError, "Linear: inverse_density must be"),
    (lambda: ffn.Linear(4, 2, noise="bogus"), ValueError, "Linear: noise must be one of"),
    (lambda: ffn.Linear(3, 3, rotation="bogus"), ValueError, "Linear: rotation must be one of"),
    (lambda: ffn.Linear(3, 2, parametrization="gram", rotaton="x"), TypeError, "rotaton"),
    (lambda: ffn.Linear(3, 2, parametrization="gram", rotation="bogus"), ValueError, "Linear: rotation"),
    (lambda: ffn.Linear(3, 3, parametrization="gram", noise="bogus"), ValueError, "Linear: noise"),
    (lambda: ffn.Linear(3, 3, bias=1), TypeError, "Linear: bias must be True or False, got 1"),
    (lambda: ffn.Linear(3, 2, parametrization="gram", bias=0), TypeError, "Linear: bias"),
    (lambda: ffn.Linear(True, 3), ValueError, "Linear: in_features must be a positive int, got True"),
    (lambda: ffn.Linear(3, False), ValueError, "Linear: out_features must be a positive int"),
    (lambda: ffn.Linear(3.0, 3), ValueError, "Linear: in_features must be a positive int, got 3.0"),
    (lambda: ffn.Linear(3), TypeError, "Linear: missing argument out_features"),
    (lambda: ffn.Linear(6, 2, hidden=0), ValueError, "Linear: hidden must be a positive int"),
    (lambda: ffn.Linear(3, 3, hidden=True), ValueError, "Linear: hidden must be a positive int"),
    (lambda: ffn.Linear(3, 3, parametrization="qr"), ValueError, "Linear: parametrization must be"),
    (lambda: Rotation(True), ValueError, "Rotation: n must be a positive int, got True"),
    (lambda: Rotation(3, "bogus"), ValueError, "Rotation: rotation must be one of"),
])
def test_every_option_is_validated_in_every_regime(build, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        build()


def test_hidden_sets_the_conditional_density_width() -> None:
    layer = ffn.Linear(10, 4, inverse_density="conditional", hidden=7)
    widths = [m.out_features for m in layer.inverse_density.net if isinstance(m, nn.Linear)]
    assert widths == [7, 12]
    default = ffn.Linear(10, 4, inverse_density="conditional")
    assert default.inverse_density.net[0].out_features == 64
