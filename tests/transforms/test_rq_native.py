"""The spline kernel in C (``_rq_native``): that the layer uses it, that it agrees with nflows
(the oracle) and is at least as accurate as the PyTorch kernel, when it applies, and how it is
built, cached, switched off and falls back. The kernel's mathematics is tested with both kernels in
``test_spline.py`` and ``test_rq_backward.py`` (the ``spline_kernel`` fixture)."""

from __future__ import annotations

import copy
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from nflows.transforms.splines.rational_quadratic import unconstrained_rational_quadratic_spline

import survae_flowify as ffn
from survae_flowify.testing import perturb_parameters
from survae_flowify.transforms import _rq_native
from survae_flowify.transforms._rq_kernel import rq_spline, rq_tables


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_c_kernel_matches_nflows_values_and_all_gradients(dtype: torch.dtype) -> None:
    """Inputs in every bin, on the knots, at ±B and in both tails; values, log-derivatives and
    the gradients of a weighted sum w.r.t. the input and every parameter, against nflows'
    function differentiated by autograd (in float64; float32 to float32 rounding)."""
    gen = torch.Generator().manual_seed(1)
    params64 = [1.5 * torch.randn(n, generator=gen, dtype=torch.float64) for n in (12, 12, 11)]
    # The knots only in float64: rounded to float32 a knot lands in either neighbouring bin,
    # where the gradient of log g' differs (it is discontinuous there) for every implementation.
    knots = rq_tables(*params64, tail_bound=2.0, inverse=False).knots[:-1]
    knots = knots if dtype == torch.float64 else knots[:0]
    edges = torch.tensor([2.0, -2.0, 2.0 + 2**-20, -2.0 - 2**-20], dtype=torch.float64)  # float32 too
    x64 = torch.cat([torch.rand(4000, generator=gen, dtype=torch.float64) * 5 - 2.5, knots, edges])
    weights = torch.randn(2, x64.shape[0], generator=gen, dtype=torch.float64)
    results = []
    for ours in (True, False):
        cast = dtype if ours else torch.float64
        x = x64.to(cast).requires_grad_()
        params = [p.to(cast).requires_grad_() for p in params64]
        if ours:
            y, log_d = rq_spline(x, *params, tail_bound=2.0)
        else:
            y, log_d = unconstrained_rational_quadratic_spline(
                x, *(p.expand(x.shape[0], -1) for p in params), tails="linear", tail_bound=2.0)
        ((weights[0].to(cast) * y).sum() + (weights[1].to(cast) * log_d).sum()).backward()
        results.append([t.double() for t in (y, log_d, x.grad, *(p.grad for p in params))])
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=tol * max(1.0, want.abs().max().item()), rtol=tol)


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
    assert _rq_native.grid_cells(1e-3, 1 << 16) == 2000
    assert _rq_native.grid_cells(1e-5, 1 << 16) == 0  # 200,000 cells: beyond the int16 columns
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
