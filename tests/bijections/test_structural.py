"""ActNorm's initialisation, and what the battery does not see of Conv1x1, Reverse, Permute, Squeeze.

The battery (tests/cases/structural.py) checks every contribution against the autograd Jacobian
at perturbed parameters, the inverses, eval == train, save/load and B = 0; here: the
data-dependent initialisation, the maps against independent references (``F.conv2d``,
``pixel_unshuffle``, plain indexing) and the argument and input errors.
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import survae_flowify as ffn
from survae_flowify.bijections.actnorm import ActNorm
from survae_flowify.bijections.conv1x1 import Conv1x1
from survae_flowify.bijections.permutations import Permute, Reverse
from survae_flowify.bijections.squeeze import Squeeze
from survae_flowify.testing import perturb_parameters


def _batch(shape: tuple[int, ...], n: int = 64, seed: int = 0) -> torch.Tensor:
    """Data far from zero mean and unit scale, with a different scale per channel."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.5, 3.0, shape[0]).view(-1, *([1] * (len(shape) - 1)))
    return 1.5 + scales * torch.randn(n, *shape, generator=g, dtype=torch.float64)


# ---------------------------------------------------------------------------------- ActNorm


@pytest.mark.parametrize("shape", [(4,), (3, 5, 2)], ids=["vector", "image"])
def test_actnorm_first_training_batch_is_normalised(shape: tuple[int, ...]) -> None:
    layer = ActNorm(shape).double()
    x = _batch(shape)
    z, contribution = layer(x)
    per_channel = z.transpose(0, 1).reshape(shape[0], -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(shape[0], dtype=torch.float64),
                               atol=1e-9, rtol=0)
    torch.testing.assert_close(per_channel.std(1, unbiased=False),
                               torch.ones(shape[0], dtype=torch.float64), atol=1e-5, rtol=0)
    assert bool(layer.initialized)
    # V = −(positions)·Σ_c log std_c, the std taken here from the batch itself.
    std = x.transpose(0, 1).reshape(shape[0], -1).std(1, unbiased=False)
    positions = x[0, 0].numel()
    torch.testing.assert_close(contribution, (-positions * std.log().sum()).expand(len(x)),
                               atol=1e-4, rtol=0)  # the init adds 1e-6 to each std


def test_actnorm_init_is_accurate_in_float32_far_from_zero() -> None:
    """A large offset must not cancel the variance (``E[x²] − mean²`` in float32 would)."""
    layer = ActNorm((2,))
    x = (1e4 + _batch((2,), n=256)).float()
    z, _ = layer(x)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(2), atol=1e-3, rtol=0)


def test_actnorm_initialises_once() -> None:
    layer = ActNorm((3,)).double()
    layer(_batch((3,), seed=0))
    after_first = [p.detach().clone() for p in layer.parameters()]
    layer(_batch((3,), seed=1) * 10)
    for p, q in zip(layer.parameters(), after_first):
        assert torch.equal(p, q)


def test_actnorm_not_initialised_in_eval_or_by_sampling() -> None:
    layer = ActNorm((2, 3, 3)).double()
    layer.eval()
    x = _batch((2, 3, 3))
    z, contribution = layer(x)
    assert torch.equal(z, x) and torch.equal(contribution, torch.zeros(len(x), dtype=x.dtype))
    assert not bool(layer.initialized)
    layer.train()
    with torch.no_grad():
        assert torch.equal(layer.inverse(x), x)  # sampling before training: the identity
    layer(x[:0])  # an empty batch has no statistics
    assert not bool(layer.initialized)
    layer(x)
    assert bool(layer.initialized) and not torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_actnorm_loaded_model_does_not_reinitialise() -> None:
    trained = ActNorm((3,)).double()
    trained(_batch((3,), seed=0))
    perturb_parameters(trained, seed=2)
    state = trained.state_dict()
    assert "initialized" in state and bool(state["initialized"])
    fresh = ActNorm((3,)).double()
    fresh.load_state_dict(state)
    fresh(_batch((3,), seed=5) * 7)  # a training-mode forward after loading
    for name, p in fresh.named_parameters():
        assert torch.equal(p, state[name]), name
    # And the other way: loading an uninitialised state makes an initialised layer wait again.
    trained.load_state_dict(ActNorm((3,)).double().state_dict())
    trained(_batch((3,)))
    assert bool(trained.initialized) and trained.bias.abs().max() > 1.0


def test_actnorm_pickled_after_init_stays_initialised() -> None:
    layer = ActNorm((2,)).double()
    layer(_batch((2,)))
    buffer = io.BytesIO()
    torch.save(layer, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    before = loaded.bias.detach().clone()
    loaded(_batch((2,), seed=3) * 5)
    assert torch.equal(loaded.bias, before)


def test_actnorm_first_batch_trains() -> None:
    """The initialising batch's forward is differentiable like any other."""
    layer = ActNorm((3,)).double()
    z, contribution = layer(_batch((3,)))
    (z.square().sum() - contribution.sum()).backward()
    assert layer.bias.grad is not None and layer.log_scale.grad is not None


def _actnorm_rank(rank: int, path: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    layer = ActNorm((2,)).double()
    layer(_batch((2,), n=8 + 24 * rank, seed=rank) * (1 + rank))  # ranks see different batches
    torch.save({k: v.clone() for k, v in layer.state_dict().items()}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_actnorm_averages_its_initialisation_over_ranks(tmp_path) -> None:
    mp.spawn(_actnorm_rank, args=(str(tmp_path / "store"), str(tmp_path / "state")), nprocs=2)
    states = [torch.load(tmp_path / f"state.{r}") for r in range(2)]
    both = torch.cat([_batch((2,), n=8 + 24 * r, seed=r) * (1 + r) for r in range(2)])
    for state in states:
        torch.testing.assert_close(state["bias"], both.mean(0), atol=1e-9, rtol=0)
        torch.testing.assert_close(state["log_scale"], both.std(0, unbiased=False).log(),
                                   atol=1e-6, rtol=0)


def test_actnorm_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="ActNorm: shape"):
        ActNorm((0, 3))
    with pytest.raises(ValueError, match=r"ActNorm\(shape=\(3,\)\).*expected x of shape"):
        ActNorm(3)(torch.randn(2, 4))


# ---------------------------------------------------------------------------------- Conv1x1


def test_conv1x1_is_a_1x1_convolution_and_starts_as_a_rotation() -> None:
    torch.manual_seed(0)
    layer = Conv1x1(4).double()
    w = layer.weight.detach()
    torch.testing.assert_close(w @ w.T, torch.eye(4, dtype=torch.float64), atol=1e-6, rtol=0)
    perturb_parameters(layer, seed=3)
    x = torch.randn(3, 4, 5, 2, dtype=torch.float64)
    z, contribution = layer(x)
    w = layer.weight.detach()
    torch.testing.assert_close(z, F.conv2d(x, w[:, :, None, None]), atol=1e-12, rtol=0)
    torch.testing.assert_close(contribution, (10 * torch.linalg.slogdet(w)[1]).expand(3),
                               atol=1e-10, rtol=0)
    torch.testing.assert_close(layer.inverse(z), x, atol=1e-10, rtol=0)


def test_conv1x1_vectors_are_a_linear_map() -> None:
    layer = perturb_parameters(Conv1x1(3).double(), seed=4)
    x = torch.randn(6, 3, dtype=torch.float64)
    z, contribution = layer(x)
    w = layer.weight.detach()
    torch.testing.assert_close(z, x @ w.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(contribution, torch.linalg.slogdet(w)[1].expand(6), atol=1e-10,
                               rtol=0)


@pytest.mark.parametrize("shape", [(2, 5), (2, 3, 4), (2, 4, 3)], ids=["channels", "3d", "no-hw"])
def test_conv1x1_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    layer = Conv1x1(4)
    with pytest.raises(ValueError, match=r"Conv1x1\(channels=4\): expected x of shape \(batch, 4\)"):
        layer(torch.randn(*shape))
    with pytest.raises(ValueError, match=r"Conv1x1\(channels=4\): expected z of shape"):
        layer.inverse(torch.randn(*shape))


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_conv1x1_rejects_bad_channels(bad: object) -> None:
    with pytest.raises(ValueError, match="Conv1x1: channels must be a positive int"):
        Conv1x1(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- Reverse, Permute


def test_reverse_and_permute_against_indexing() -> None:
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    z, contribution = Reverse()(x)
    assert torch.equal(z, x[:, [4, 3, 2, 1, 0]]) and torch.equal(contribution, torch.zeros(3, dtype=x.dtype))
    perm = [3, 0, 4, 1, 2]
    layer = Permute(perm)
    z, contribution = layer(x)
    assert torch.equal(z, x[:, perm]) and torch.equal(contribution, torch.zeros(3, dtype=x.dtype))
    assert torch.equal(layer.inverse(z), x)


@pytest.mark.parametrize(
    ("bad", "error"),
    [([0, 0, 1], ValueError), ([1, 2], ValueError), ([], ValueError), ([0, 2, 1, 3, 3], ValueError),
     (torch.tensor([[0, 1]]), ValueError), (torch.tensor([0.0, 1.0]), ValueError),
     ([0, 1.0], TypeError), ([True, False], TypeError), ("01", TypeError), (3, TypeError)],
)
def test_permute_rejects_what_is_not_a_permutation(bad: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"Permute: permutation must be a permutation of range\(D\)"):
        Permute(bad)  # type: ignore[arg-type]


def test_permute_and_reverse_name_the_expected_shape() -> None:
    with pytest.raises(ValueError, match=r"Permute\(features=3\): expected x of shape \(batch, 3, ...\)"):
        Permute([2, 1, 0])(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"Permute\(features=3\): expected z of shape"):
        Permute([2, 1, 0]).inverse(torch.randn(2, 2, 2))
    with pytest.raises(ValueError, match=r"Reverse: expected x of shape \(batch, D, ...\)"):
        Reverse()(torch.randn(4))


# ---------------------------------------------------------------------------------- Squeeze


@pytest.mark.parametrize("factor", [2, 3])
def test_squeeze_follows_the_documented_order(factor: int) -> None:
    f = factor
    x = torch.randn(2, 3, 2 * f, 3 * f, dtype=torch.float64)
    z, contribution = Squeeze(f)(x)
    assert z.shape == (2, 3 * f * f, 2, 3) and torch.equal(contribution, torch.zeros(2, dtype=x.dtype))
    for c in range(3):
        for i in range(f):
            for j in range(f):
                assert torch.equal(z[:, c * f * f + i * f + j], x[:, c, i::f, j::f])
    assert torch.equal(z, F.pixel_unshuffle(x, f))  # torch's space-to-depth has the same order
    assert torch.equal(Squeeze(f).inverse(z), x)


def test_squeeze_errors_name_the_factor_and_the_size() -> None:
    with pytest.raises(ValueError, match=r"Squeeze\(factor=2\): .*divisible by the factor 2.*H=5"):
        Squeeze(2)(torch.randn(1, 1, 5, 4))
    with pytest.raises(ValueError, match=r"Squeeze\(factor=3\): .*C divisible by factor² = 9.*C=4"):
        Squeeze(3).inverse(torch.randn(1, 4, 2, 2))
    with pytest.raises(ValueError, match=r"Squeeze\(factor=2\): expected x of shape \(batch, \*, \*, \*\)"):
        Squeeze()(torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="Squeeze: factor must be a positive int"):
        Squeeze(0)


def test_glow_step_in_a_flow_is_normalised() -> None:
    """Squeeze → ActNorm → Conv1x1 → Permute over a standard normal: an exact flow whose
    log-likelihood is the closed-form Gaussian log-density of the linear map's image."""
    torch.manual_seed(0)
    t = ffn.Sequential(Squeeze(2), ActNorm((4, 1, 1)), Conv1x1(4), Permute([1, 3, 0, 2]))
    t(_batch((1, 2, 2)).float())  # initialise ActNorm (its first training batch)
    flow = ffn.Flow(ffn.StandardNormal(4, 1, 1), t).double()
    perturb_parameters(flow, seed=6)
    x = torch.randn(7, 1, 2, 2, dtype=torch.float64)
    # z = A x + c for the whole stack, A and c read off by probing with basis vectors.
    with torch.no_grad():
        c = t(torch.zeros(1, 1, 2, 2, dtype=torch.float64))[0].flatten()
        a = torch.stack([t(e.view(1, 1, 2, 2))[0].flatten() - c
                         for e in torch.eye(4, dtype=torch.float64)], 1)
        mvn = torch.distributions.MultivariateNormal(
            torch.linalg.solve(a, -c), covariance_matrix=torch.linalg.inv(a.T @ a))
        torch.testing.assert_close(flow.log_prob(x), mvn.log_prob(x.flatten(1)), atol=1e-9, rtol=0)
