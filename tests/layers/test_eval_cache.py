"""The eval caches of Linear (SVD and Gram), Rotation and RqSpline under hostile edits (issue 8, item 1).

Every case warms the cache in eval mode under ``no_grad``, changes the layer the way users do
(``p.data`` edits that bypass the version counter, a hand-written EMA, an attribute, a dtype, a
state dict), and compares with a computation that cannot use a cache: the same layer evaluated
with autograd on (derived tensors that need a gradient are never reused).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import survae_flowify as ffn
from survae_flowify.layers.rotations import Rotation
from survae_flowify.testing import perturb_parameters
from survae_flowify.transforms import _rq_native


@pytest.fixture(autouse=True)
def _pytorch_spline_kernel():
    """RqSpline's forward caches its tables only on the PyTorch kernel: the C kernel rebuilds
    them on every call (microseconds), so it holds no cache that could go stale
    (``tests/transforms/test_rq_native.py``)."""
    with _rq_native.disabled():
        yield

LAYERS = {
    "svd-square": lambda: ffn.Linear(5, 5),
    "svd-reducing": lambda: ffn.Linear(6, 3),
    "svd-increasing": lambda: ffn.Linear(3, 6),
    "svd-reducing-exp": lambda: ffn.Linear(6, 3, rotation="exp"),
    "gram-reducing": lambda: ffn.Linear(6, 3, parametrization="gram"),
    "gram-square": lambda: ffn.Linear(4, 4, parametrization="gram"),
    "gram-conditional": lambda: ffn.Linear(6, 3, parametrization="gram", inverse_density="conditional"),
    "svd-reducing-wide": lambda: ffn.Linear(150, 70),  # several blocks of reflectors
    "spline": lambda: ffn.RqSpline(),
    "flow-part": lambda: ffn.Sequential(ffn.Linear(6, 4), ffn.RqSpline(), ffn.Linear(4, 4)),
}


def _input(layer: nn.Module, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    fin = getattr(layer, "in_features", None) or getattr(layer[0], "in_features", 6) \
        if isinstance(layer, ffn.Sequential) else getattr(layer, "in_features", 6)
    return 1.5 * torch.randn(9, fin, dtype=dtype, generator=torch.Generator().manual_seed(3))


def _uncached(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output computed without any cache: autograd on, so nothing derived is reused."""
    with torch.enable_grad(), ffn.noise_off():
        z, c = layer(x)
    return z.detach(), c.detach()


def _cached(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad(), ffn.noise_off():
        return layer(x)


def _warm(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    layer = perturb_parameters(LAYERS[name]()).double().eval()
    x = _input(layer)
    _cached(layer, x)  # warm every cache
    return layer, x


def _assert_fresh(layer: nn.Module, x: torch.Tensor) -> None:
    z, c = _cached(layer, x)
    z_ref, c_ref = _uncached(layer, x)
    torch.testing.assert_close(z, z_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(c, c_ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", LAYERS)
def test_data_copy_is_seen(name: str) -> None:
    layer, x = _warm(name)
    other = perturb_parameters(LAYERS[name](), seed=11).double()
    for p, q in zip(layer.parameters(), other.parameters()):
        p.data.copy_(q.data)  # .data edits do not bump the version counter
    _assert_fresh(layer, x)


@pytest.mark.parametrize("name", LAYERS)
def test_hand_written_ema_through_data_is_seen(name: str) -> None:
    layer, x = _warm(name)
    other = perturb_parameters(LAYERS[name](), seed=12, scale=1.0).double()
    for p, q in zip(layer.parameters(), other.parameters()):
        p.data.mul_(0.5).add_(0.5 * q.data)
    _assert_fresh(layer, x)


@pytest.mark.parametrize("name", LAYERS)
def test_clipping_through_data_is_seen(name: str) -> None:
    layer, x = _warm(name)
    for p in layer.parameters():
        p.data.clamp_(-0.1, 0.1)
    _assert_fresh(layer, x)


@pytest.mark.parametrize("name", LAYERS)
def test_no_grad_edits_and_load_state_dict_are_seen(name: str) -> None:
    layer, x = _warm(name)
    other = perturb_parameters(LAYERS[name](), seed=13).double()
    layer.load_state_dict(other.state_dict())
    _assert_fresh(layer, x)
    with torch.no_grad():
        for p in layer.parameters():
            p.mul_(1.1)
    _assert_fresh(layer, x)


@pytest.mark.parametrize("name", LAYERS)
def test_dtype_change_after_warm_cache(name: str) -> None:
    torch.manual_seed(0)
    layer = perturb_parameters(LAYERS[name]()).eval()  # float32
    x = _input(layer, torch.float32)
    _cached(layer, x)
    layer.double()
    x64 = x.double()
    z, c = _cached(layer, x64)
    assert z.dtype == torch.float64 and c.dtype == torch.float64
    _assert_fresh(layer, x64)


def test_tail_bound_change_on_a_warm_spline() -> None:
    layer, x = _warm("spline")
    layer.tail_bound = 1.0
    _assert_fresh(layer, x)
    z_inv = _cached_inverse(layer, x)
    with torch.enable_grad():
        torch.testing.assert_close(z_inv, layer.inverse(x).detach(), atol=1e-10, rtol=0)


def _cached_inverse(layer: nn.Module, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return layer.inverse(z)


@pytest.mark.parametrize("name", ["svd-square", "svd-reducing", "gram-square", "gram-reducing", "spline"])
def test_inverse_sees_data_edits(name: str) -> None:
    """The right-inverse condition ``forward(inverse(z)) = z`` with the edited parameters."""
    layer, x = _warm(name)
    z = _cached(layer, x)[0]
    _cached_inverse(layer, z)  # warm the inverse path too
    for p in layer.parameters():
        p.data.mul_(0.9)
    z = _uncached(layer, x)[0]
    back = _cached_inverse(layer, z)
    torch.testing.assert_close(_uncached(layer, back)[0], z, atol=1e-8, rtol=0)


@pytest.mark.parametrize("kind", ["householder", "cayley", "exp"])
def test_rotation_matrix_sees_data_edits(kind: str) -> None:
    torch.manual_seed(0)
    rot = perturb_parameters(Rotation(5, kind)).double().eval()
    with torch.no_grad():
        rot.matrix()
    rot.weight.data.add_(0.2 * torch.randn_like(rot.weight))
    rot.signs.data[-1] = -1.0
    with torch.no_grad():
        cached = rot.matrix()
    with torch.enable_grad():
        fresh = rot.matrix().detach()
    torch.testing.assert_close(cached, fresh, atol=1e-12, rtol=0)


def test_cache_is_reused_while_nothing_changes() -> None:
    """The cache still pays: unchanged parameters give the very same derived tensors."""
    rot = perturb_parameters(Rotation(6)).eval()
    with torch.no_grad():
        assert rot.matrix() is rot.matrix()
    layer = perturb_parameters(ffn.Linear(6, 3)).eval()
    x = torch.randn(4, 6)
    with torch.no_grad():
        first = layer._eval_mats(x.dtype)
        assert first is not None and layer._eval_mats(x.dtype) is first


def _held_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Tensors a module holds outside its parameters, buffers and submodules (i.e. its caches)."""
    found: list[torch.Tensor] = []

    def walk(value: object) -> None:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (tuple, list)):
            for v in value:
                walk(v)
        elif hasattr(value, "__dict__") and not isinstance(value, (nn.Module, type)):
            walk(vars(value))

    for m in module.modules():
        for name, value in vars(m).items():
            if name not in ("_parameters", "_buffers", "_modules") and not name.endswith("hooks"):
                walk(value)
    return found


@pytest.mark.parametrize("name", LAYERS)
def test_double_drops_the_old_cached_tensors(name: str) -> None:
    torch.manual_seed(0)
    layer = perturb_parameters(LAYERS[name]()).eval()
    _cached(layer, _input(layer, torch.float32))
    assert _held_tensors(layer) or name == "gram-square"  # warm (the square Gram layer caches nothing)
    layer.double()
    assert not [t for t in _held_tensors(layer) if t.dtype == torch.float32]
    _assert_fresh(layer, _input(layer))


def test_dtype_round_trip_with_an_edit_in_between() -> None:
    """float32 → float64 (edited) → float32: new storage may reuse the old address and version."""
    for name in LAYERS:
        torch.manual_seed(0)
        layer = perturb_parameters(LAYERS[name]()).eval()
        x = _input(layer, torch.float32)
        _cached(layer, x)
        layer.double()
        with torch.no_grad():
            for p in layer.parameters():
                p.mul_(0.8)
        layer.float()
        z, c = _cached(layer, x)
        z_ref, c_ref = _uncached(layer, x)
        torch.testing.assert_close(z, z_ref, atol=1e-4, rtol=1e-4, msg=name)
        torch.testing.assert_close(c, c_ref, atol=1e-4, rtol=1e-4, msg=name)


def test_the_one_sync_comparison_agrees_with_torch_equal() -> None:
    """The device-side reduction used off the CPU gives torch.equal's answer (checked on the CPU)."""
    from survae_flowify._cache import values_equal

    a = torch.randn(5, 5)
    for b, want in ((a.clone(), True), (a + 1e-7, False), (torch.where(a > 0, a, a * 2), False)):
        for one_sync in (False, True):
            assert values_equal([(a, a.clone()), (a, b)], one_sync=one_sync) is want
    nan = torch.tensor([float("nan")])
    for one_sync in (False, True):
        assert values_equal([(nan, nan.clone())], one_sync=one_sync) is False  # rebuilt, never reused
    half = a.to(torch.bfloat16)  # a dtype numpy lacks
    assert values_equal([(half, half.clone())], one_sync=False) is True
    assert values_equal([(half, half + 1)], one_sync=False) is False
    grad = a.clone().requires_grad_()
    assert values_equal([(a, grad)], one_sync=False) is True
