"""The spline kernel in C (``_rq_native``): that the layer uses it, that it is at least as
accurate as the PyTorch kernel, when it applies, and how it is built, cached, switched off and
falls back. Its agreement with nflows (the oracle: values and every gradient, inputs on the knots,
at ±B and in the tails, float32 and float64, gradcheck) is tested with both kernels in
``test_spline.py`` and ``test_rq_backward.py`` (the ``spline_kernel`` fixture)."""

from __future__ import annotations

import copy
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

import survae_flowify as ffn
from survae_flowify.testing import perturb_parameters
from survae_flowify.transforms import _rq_native
from survae_flowify.transforms._rq_kernel import grid_cells, rq_spline


@pytest.fixture
def fresh_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A new build state and an empty cache directory; the environment's switches cleared."""
    monkeypatch.setattr(_rq_native, "_state", {})
    monkeypatch.setenv("SURVAE_FLOWIFY_CACHE", str(tmp_path))
    monkeypatch.delenv("SURVAE_FLOWIFY_NATIVE", raising=False)
    monkeypatch.delenv("CC", raising=False)
    return tmp_path


def _spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"forward": 0, "backward": 0}
    for name in calls:
        original = getattr(_rq_native, name)

        def wrapped(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(_rq_native, name, wrapped)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_the_layer_runs_the_c_kernel_forward_and_backward(monkeypatch: pytest.MonkeyPatch,
                                                         dtype: torch.dtype) -> None:
    calls = _spy(monkeypatch)
    layer = perturb_parameters(ffn.RqSpline().to(dtype), scale=1.0, seed=0)
    x = torch.randn(32, 20, dtype=dtype, requires_grad=True)
    z, log_det = layer(x)
    (z.sum() + log_det.sum()).backward()
    assert calls == {"forward": 1, "backward": 1}
    with _rq_native.disabled():
        layer(x)
    assert calls["forward"] == 1  # the PyTorch kernel ran


def test_c_kernel_is_at_least_as_accurate_as_the_pytorch_one_in_float32() -> None:
    """A 256×512 float32 batch as in FMLP, outputs and the gradients the backward sums over
    131,072 entries, against the same layer in float64: the C kernel (tables in double, rounded
    once) to float32 accuracy, and no further from it than the PyTorch kernel (float32 tables)."""
    layer64 = perturb_parameters(ffn.RqSpline().double(), scale=1.0, seed=3)
    x0 = 1.5 * torch.randn(256, 512, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def run(dtype: torch.dtype) -> list[torch.Tensor]:
        layer = copy.deepcopy(layer64).to(dtype)
        x = x0.detach().to(dtype).requires_grad_()
        z, log_det = layer(x)
        ((z * x.detach()).sum() + log_det.sum()).backward()
        return [t.double() for t in (z, log_det, x.grad, *(p.grad for p in layer.parameters()))]

    want = run(torch.float64)
    native = run(torch.float32)
    with _rq_native.disabled():
        pytorch = run(torch.float32)
    for got, other, exact in zip(native, pytorch, want, strict=True):
        scale = exact.abs().max().item()
        error, other_error = ((got - exact).abs().max().item() / scale,
                              (other - exact).abs().max().item() / scale)
        assert error < 1e-4 and error <= 1.5 * other_error + 1e-7, (error, other_error)


def test_a_strided_one_dimensional_input_is_read_correctly() -> None:
    """The flattening keeps views where it can; a strided 1-D view stays strided, and the C
    kernel, which reads contiguous memory, must get a contiguous copy."""
    params = [torch.randn(n, generator=torch.Generator().manual_seed(n)) for n in (10, 10, 9)]
    base = torch.randn(2000, generator=torch.Generator().manual_seed(0))
    got = rq_spline(base[::2], *params, tail_bound=2.0)
    want = rq_spline(base[::2].clone(), *params, tail_bound=2.0)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w)


def test_where_the_c_kernel_applies() -> None:
    params = [torch.randn(n) for n in (10, 10, 9)]
    x = torch.randn(8)
    assert _rq_native.usable(x, params, 2000)
    assert _rq_native.usable(x.double(), params, 2000)  # parameters of another dtype are cast
    assert not _rq_native.usable(x.half(), params, 2000)
    assert not _rq_native.usable(x, params, 0)  # no grid (binary search): the PyTorch kernel
    assert grid_cells(1e-3) == 2000
    assert not _rq_native.usable(x, params, grid_cells(1e-4))  # 20,000 cells: beyond the int16 columns
    with _rq_native.disabled():
        assert not _rq_native.usable(x, params, 2000)
    assert _rq_native.usable(x, params, 2000)  # the switch is restored


def test_switched_off_by_the_environment(fresh_build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURVAE_FLOWIFY_NATIVE", "0")
    calls = _spy(monkeypatch)
    assert _rq_native.library() is None and not _rq_native.available()
    layer = perturb_parameters(ffn.RqSpline(), scale=1.0, seed=0)
    z, _ = layer(torch.randn(4, 6))
    assert calls["forward"] == 0 and torch.isfinite(z).all()
    assert list(fresh_build.iterdir()) == []  # nothing was built


def test_the_build_is_cached_under_a_key_of_its_inputs(fresh_build: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert _rq_native.library() is not None
    (built,) = fresh_build.iterdir()  # one library, no temporary file left beside it
    assert built.name.startswith("rq_native-") and built.suffix == ".so"
    stamp = built.stat().st_mtime_ns
    monkeypatch.setattr(_rq_native, "_state", {})
    assert _rq_native.library() is not None
    assert list(fresh_build.iterdir()) == [built] and built.stat().st_mtime_ns == stamp  # reused
    # Other flags (as another compiler or CPU would) give another library.
    flag_sets = tuple((*flags, "-DRQ_CACHE_TEST") for flags in _rq_native._FLAG_SETS)
    monkeypatch.setattr(_rq_native, "_FLAG_SETS", flag_sets)
    monkeypatch.setattr(_rq_native, "_state", {})
    assert _rq_native.library() is not None
    assert len(list(fresh_build.iterdir())) == 2


def test_an_unusable_cache_directory_falls_back_to_the_temporary_one(
        fresh_build: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    not_a_directory = fresh_build / "cache-file"
    not_a_directory.write_text("a file where the cache directory should be")
    monkeypatch.setenv("SURVAE_FLOWIFY_CACHE", str(not_a_directory))
    temporary = tmp_path_factory.mktemp("tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _rq_native.library() is not None
    (directory,) = temporary.iterdir()
    assert directory.name.startswith("survae_flowify-")
    assert [p.suffix for p in directory.iterdir()] == [".so"]


def test_a_compiler_that_refuses_march_native_builds_without_it(
        fresh_build: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    real = shutil.which("cc")
    assert real is not None
    script = tmp_path_factory.mktemp("cc") / "picky-cc"
    script.write_text(f'#!/bin/sh\nfor a in "$@"; do [ "$a" = -march=native ] && '
                      f'{{ echo "picky-cc: unknown -march" >&2; exit 1; }}; done\nexec {real} "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("CC", str(script))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _rq_native.library() is not None
    assert len(list(fresh_build.iterdir())) == 1  # the portable build; the refused one left nothing
    calls = _spy(monkeypatch)
    layer = perturb_parameters(ffn.RqSpline(), scale=1.0, seed=0)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    got = layer(x)
    assert calls["forward"] == 1
    with _rq_native.disabled():
        want = layer(x)
    for g, w in zip(got, want, strict=True):  # float32: the C kernel's tables are rounded from float64
        torch.testing.assert_close(g, w, atol=2e-4, rtol=1e-4)


def _failing_compiler(directory: Path) -> Path:
    script = directory / "broken-cc"
    script.write_text("#!/bin/sh\necho 'broken-cc: no such luck' >&2\nexit 1\n")
    script.chmod(0o755)
    return script


def test_a_failing_compiler_falls_back_with_a_warning(fresh_build: Path, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("CC", str(_failing_compiler(tmp_path_factory.mktemp("cc"))))
    with pytest.warns(RuntimeWarning, match=r"(?s)could not be built.*broken-cc: no such luck"):
        assert _rq_native.library() is None
    assert list(fresh_build.iterdir()) == []  # the partial output was removed
    layer = perturb_parameters(ffn.RqSpline(), scale=1.0, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not on every call
        z, _ = layer(torch.randn(4, 6))
    assert torch.isfinite(z).all()


def test_a_required_kernel_that_fails_to_build_is_an_error(fresh_build: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("SURVAE_FLOWIFY_NATIVE", "1")
    monkeypatch.setenv("CC", str(_failing_compiler(tmp_path_factory.mktemp("cc"))))
    with pytest.raises(_rq_native.NativeBuildError, match=r"SURVAE_FLOWIFY_NATIVE=1.*broken-cc"):
        _rq_native.library()


def test_no_compiler_is_a_quiet_fallback(fresh_build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "no-such-c-compiler-here")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _rq_native.library() is None
    monkeypatch.setenv("SURVAE_FLOWIFY_NATIVE", "1")
    monkeypatch.setattr(_rq_native, "_state", {})
    with pytest.raises(_rq_native.NativeBuildError, match=r"no C compiler found.*no-such-c-compiler-here"):
        _rq_native.library()


def test_the_c_kernel_keeps_no_tables_to_go_stale() -> None:
    """In eval mode without gradients the PyTorch kernel reuses cached tables; the C kernel
    builds them on every call, so an edit through ``p.data`` shows at once and nothing is held."""
    layer = perturb_parameters(ffn.RqSpline(), scale=1.0, seed=0).eval()
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = layer(x)[0]
        layer.unnormalized_heights.data.mul_(-1)
        after = layer(x)[0]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, layer.train()(x)[0].detach())
    assert not layer.__dict__.get("_derived_cache")
