r"""The spline kernel's forward direction in C (``_rq_native.c``), compiled on first use.

The PyTorch kernel (:mod:`~survae_flowify.transforms._rq_kernel`) builds its ``O(K + M)``
tables with about forty small torch operations (and autograd differentiates them: 0.71 ms a call
forward and backward, one thread), then evaluates ``g(x)`` and ``log g'(x)`` with about a dozen
elementwise operations forward and two dozen backward, each one pass over memory. On a CPU those
fixed costs and passes, not the arithmetic, are what the time goes to (``torch.compile`` of the
same per-entry formulas was no faster: 4.3 against 4.9 ms forward and backward for 256×512
entries). :class:`NativeSpline` does the same in C:

* the tables from the unnormalised parameters, in ``float64`` and rounded once to the input's
  dtype (so float32 results are closer to float64 ones than the PyTorch kernel's, whose tables
  are computed in float32): the knots, the per-bin coefficients, the lookup grid and its
  ``(C, 8)`` column table, one entry's coefficients side by side;
* one vectorised pass per entry forward (grid lookup, one read of the entry's row, the rational
  function; the log is one ``torch.log_`` pass), keeping the entry's ``int16`` column;
* one vectorised pass per block of 256 entries backward for ``∂/∂x`` and the seven coefficient
  terms, then their per-column sums in ``float64``;
* the ``O(K)`` chain rule from the per-column sums back to the unnormalised parameters (bins,
  coefficients, knots, softmax and softplus), written out in ``rq_tables_backward``.

The code is plain C (no PyTorch headers), so compiling it takes well under a second. The
shared library is built with the system's C compiler (``$CC``, else ``cc``) at ``-O3
-march=native`` (without it where the compiler refuses it) and kept in a cache directory
(``$SURVAE_FLOWIFY_CACHE``, else ``$XDG_CACHE_HOME/survae_flowify`` or ``~/.cache/survae_flowify``;
where that cannot be written, a per-user directory in the system's temporary directory), under a
name hashed from the source, the flags, the compiler's version and the CPU's model and flags (a
library built for one CPU is never loaded on another). It is written to a temporary file and
renamed into place, so processes that compile at once (DDP workers) never see half a file. It is
loaded with :mod:`ctypes`. The loops run on one thread: splitting a 256×512 or 1024×512 input
over two threads (a pool of Python threads; ctypes releases the GIL) was no faster on a two-core
machine, where the pass over memory and its page faults, not the arithmetic, bound it.

Used for the forward direction on float32 and float64 CPU tensors with the lookup grid (the
default minimum bin width), outside ``torch.compile`` tracing (which keeps the PyTorch kernel:
no graph break). The inverse (sampling) and everything else use the PyTorch kernel. Without a C
compiler, or with ``SURVAE_FLOWIFY_NATIVE=0``, the PyTorch kernel runs instead: the same function
to float rounding. ``SURVAE_FLOWIFY_NATIVE=1`` makes a failed build an error rather than a
fallback."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

from survae_flowify._cache import compiling

__all__ = [
    "NativeBuildError",
    "NativeSpline",
    "Settings",
    "available",
    "backward",
    "build_tables",
    "disabled",
    "forward",
    "library",
    "tables_backward",
    "usable",
]

_SOURCE = Path(__file__).with_name("_rq_native.c")
# This CPU's vector units first; then without -march=native, which some compilers refuse
# (Apple's clang on arm64 before version 15).
_FLAG_SETS = (("-O3", "-march=native", "-std=c99", "-shared", "-fPIC"),
              ("-O3", "-std=c99", "-shared", "-fPIC"))
_ENV = "SURVAE_FLOWIFY_NATIVE"
_INT16_COLUMNS = torch.iinfo(torch.int16).max

_lock = threading.Lock()
_state: dict[str, object] = {}  # "library": the CDLL, or None once a build failed
_switch = threading.local()


class NativeBuildError(RuntimeError):
    """The C kernel could not be built while ``SURVAE_FLOWIFY_NATIVE=1`` requires it."""


def _cache_dir() -> Path:
    if os.environ.get("SURVAE_FLOWIFY_CACHE"):
        return Path(os.environ["SURVAE_FLOWIFY_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "survae_flowify"


def _cpu_signature() -> str:
    """The CPU's model and instruction-set flags: what ``-march=native`` compiles for."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    keys = ("model name", "flags", "Features", "CPU implementer", "CPU part")
    found = {line.split(":")[0].strip(): line for line in lines if line.split(":")[0].strip() in keys}
    return f"{platform.machine()} " + " ".join(sorted(found.values()))


def _cache_dirs() -> list[Path]:
    """Where the library may be kept: the cache directory, else (unwritable, or not a directory)
    a per-user directory under the system's temporary directory."""
    user = getattr(os, "getuid", lambda: "user")()
    return [_cache_dir(), Path(tempfile.gettempdir()) / f"survae_flowify-{user}"]


def _compile(compiler: str, flags: tuple[str, ...], target: Path) -> str | None:
    """Build ``target`` (written to a temporary file, then renamed into place); the compiler's
    complaint if it fails."""
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        run = subprocess.run([compiler, *flags, str(_SOURCE), "-o", partial, "-lm"],
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            return f"{compiler} {' '.join(flags)} failed on {_SOURCE.name}:\n{run.stderr.strip()}"
        os.replace(partial, target)
        return None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


def _build() -> ctypes.CDLL:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise NativeBuildError(f"no C compiler found (looked for {os.environ.get('CC', 'cc')!r} on PATH)")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    source = _SOURCE.read_bytes()
    problems: list[str] = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), version.encode(),
                                          _cpu_signature().encode()])).hexdigest()[:20]
        for directory in _cache_dirs():
            target = directory / f"rq_native-{key}.so"
            if target.exists():
                return _load(target)
            try:
                directory.mkdir(parents=True, exist_ok=True)
                problem = _compile(compiler, flags, target)
            except OSError as error:  # not writable: the next directory
                problems.append(f"cannot write to {directory}: {error}")
                continue
            if problem is None:
                return _load(target)
            problems.append(problem)
            break  # the compiler refused these flags: the next set
    raise NativeBuildError("\n".join(problems))


def _load(target: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(target))
    p, i64, f32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_double
    for suffix, real in (("f32", f32), ("f64", f64)):
        getattr(lib, f"rq_forward_{suffix}").argtypes = [p, i64, p, p, real, real, real, p, p, p]
        getattr(lib, f"rq_backward_{suffix}").argtypes = [p, p, i64, p, p, p, p, p]
        getattr(lib, f"rq_tables_{suffix}").argtypes = [p, p, p, i64, f64, f64, f64, f64, f64, i64,
                                                        p, p, p, p]
    lib.rq_tables_backward.argtypes = [p, p, p, i64, f64, f64, f64, f64, f64, i64, p, p, p, p, p, p]
    for fn in ("rq_forward_f32", "rq_forward_f64", "rq_backward_f32", "rq_backward_f64",
               "rq_tables_f32", "rq_tables_f64", "rq_tables_backward"):
        getattr(lib, fn).restype = None
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernel (built on the first call), or ``None`` where it cannot be built or is
    switched off (``SURVAE_FLOWIFY_NATIVE=0``)."""
    setting = os.environ.get(_ENV, "").strip()
    if setting == "0":
        return None
    if "library" in _state:  # built (or failed) already: no lock on the per-call path
        return _state["library"]  # type: ignore[return-value]
    with _lock:
        if "library" not in _state:
            try:
                _state["library"] = _build()
            except (OSError, NativeBuildError, subprocess.SubprocessError) as error:
                if setting == "1":
                    raise NativeBuildError(f"{_ENV}=1, but the spline's C kernel is not available: "
                                           f"{error}") from error
                if shutil.which(os.environ.get("CC", "cc")) is not None:
                    # A compiler that fails is worth a word; a machine without one is not.
                    warnings.warn(f"survae_flowify: the spline's C kernel could not be built, using "
                                  f"the PyTorch kernel ({error})", RuntimeWarning, stacklevel=3)
                _state["library"] = None
    return _state["library"]  # type: ignore[return-value]


def available() -> bool:
    """Whether the C kernel is built and switched on."""
    return library() is not None


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the PyTorch kernel in this thread within the block (tests and benchmarks compare them)."""
    previous = getattr(_switch, "off", False)
    _switch.off = True
    try:
        yield
    finally:
        _switch.off = previous


def usable(x: Tensor, params: Sequence[Tensor], cells: int) -> bool:
    """Whether :class:`NativeSpline` applies: ``x`` float32/float64 and the parameters on a CPU,
    the grid lookup in use (``cells > 0``) with columns an ``int16`` indexes, not while
    ``torch.compile`` traces, and the kernel available."""
    return (0 < cells and 2 * (cells + 2) <= _INT16_COLUMNS and x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and all(p.device.type == "cpu" for p in params)
            and not getattr(_switch, "off", False) and not compiling()
            and library() is not None)


def forward(x: Tensor, table: Tensor, ahead: Tensor, bound: float, cells: int
            ) -> tuple[Tensor, Tensor, Tensor]:
    """``(g(x), log g'(x), column as int16)`` for a contiguous flat ``x`` and the ``(C, 8)``
    table of :func:`build_tables`."""
    lib = library()
    assert lib is not None
    width = 2 * bound / cells
    out, ratio = torch.empty_like(x), torch.empty_like(x)
    col = torch.empty(x.shape[0], dtype=torch.int16)
    fn = lib.rq_forward_f32 if x.dtype == torch.float32 else lib.rq_forward_f64
    fn(x.data_ptr(), x.shape[0], table.data_ptr(), ahead.contiguous().data_ptr(), 1 / width,
       (bound + width) / width, float(cells + 1), out.data_ptr(), ratio.data_ptr(), col.data_ptr())
    return out, ratio.log_(), col


def backward(x: Tensor, col: Tensor, table: Tensor, grad_out: Tensor, grad_log: Tensor, *,
             parameters: bool) -> tuple[Tensor, Tensor | None]:
    """``(∂/∂x, ∂/∂table)`` of ``Σ ḡ·g + ℓ̄·log g'`` from :func:`forward`'s state, the second
    as ``(C, 8)`` float64 sums per column (``None`` unless ``parameters``); ``grad_out`` and
    ``grad_log`` contiguous, of ``x``'s shape and dtype."""
    lib = library()
    assert lib is not None
    grad_x = torch.empty_like(x)
    sums = torch.zeros((table.shape[0], 8), dtype=torch.float64) if parameters else None
    fn = lib.rq_backward_f32 if x.dtype == torch.float32 else lib.rq_backward_f64
    fn(x.data_ptr(), col.data_ptr(), x.shape[0], table.data_ptr(), grad_out.data_ptr(),
       grad_log.data_ptr(), grad_x.data_ptr(), None if sums is None else sums.data_ptr())
    return grad_x, sums


class Settings(NamedTuple):
    """What a spline call fixes besides its parameters (``rq_tables``' keywords and grid size)."""

    bound: float
    min_width: float
    min_height: float
    min_derivative: float
    cells: int


def _doubles(*tensors: Tensor) -> list[Tensor]:
    return [t.detach().to(device="cpu", dtype=torch.float64).contiguous() for t in tensors]


def _boundary(settings: Settings) -> float:
    return math.log(math.expm1(1 - settings.min_derivative))


def build_tables(dtype: torch.dtype, params64: list[Tensor], settings: Settings
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """``(table (C, 8), ahead (M+2,), bins (C,) int32)`` in ``dtype`` from the unnormalised
    parameters (:func:`_doubles`), computed in double precision (``_rq_native.c``, ``rq_tables_*``)."""
    lib = library()
    assert lib is not None
    uw, uh, ud = params64
    k, cells = uw.shape[0], settings.cells
    columns = 2 * (cells + 2)
    table = torch.empty((columns, 8), dtype=dtype)
    ahead = torch.empty(cells + 2, dtype=dtype)
    bins = torch.empty(columns, dtype=torch.int32)
    scratch = torch.empty(8 * (k + 1) + 8 * (k + 2), dtype=torch.float64)
    fn = lib.rq_tables_f32 if dtype == torch.float32 else lib.rq_tables_f64
    fn(uw.data_ptr(), uh.data_ptr(), ud.data_ptr(), k, settings.bound, settings.min_width,
       settings.min_height, settings.min_derivative, _boundary(settings), cells,
       scratch.data_ptr(), table.data_ptr(), ahead.data_ptr(), bins.data_ptr())
    return table, ahead, bins


def tables_backward(params64: list[Tensor], settings: Settings, sums: Tensor, bins: Tensor
                    ) -> list[Tensor]:
    """The unnormalised parameters' gradients (float64) from the per-column sums ``(C, 8)`` that
    :func:`backward` accumulates."""
    lib = library()
    assert lib is not None
    uw, uh, ud = params64
    k = uw.shape[0]
    grads = [torch.empty_like(t) for t in (uw, uh, ud)]
    scratch = torch.empty(7 * (k + 1) + 8 * (k + 2) + 3 * (k + 1), dtype=torch.float64)
    lib.rq_tables_backward(uw.data_ptr(), uh.data_ptr(), ud.data_ptr(), k, settings.bound,
                           settings.min_width, settings.min_height, settings.min_derivative,
                           _boundary(settings), settings.cells, sums.data_ptr(), bins.data_ptr(),
                           scratch.data_ptr(), *(g.data_ptr() for g in grads))
    return grads


class NativeSpline(torch.autograd.Function):
    """``(g(x), log g'(x))`` for a flat contiguous ``x`` ``(N,)`` from the unnormalised
    parameters ``(K,)``, ``(K,)``, ``(K−1,)``: tables, per-entry loops and both backwards in C.
    Keeps per entry ``x`` and its ``int16`` column, as the PyTorch kernel does, and the parameters
    as the float64 copies the tables were built from; first derivatives only."""

    @staticmethod
    def forward(ctx, x: Tensor, uw: Tensor, uh: Tensor, ud: Tensor, settings: Settings
                ) -> tuple[Tensor, Tensor]:
        params64 = _doubles(uw, uh, ud)
        table, ahead, bins = build_tables(x.dtype, params64, settings)
        out, log_det, col = forward(x, table, ahead, settings.bound, settings.cells)
        ctx.settings, ctx.table, ctx.bins = settings, table, bins
        ctx.params64, ctx.dtypes = params64, (uw.dtype, uh.dtype, ud.dtype)
        ctx.save_for_backward(x, col)
        return out, log_det

    @staticmethod
    def backward(ctx, grad_out: Tensor, grad_log: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "RqSpline: the fast spline kernel has a closed-form first derivative only; for "
                "second derivatives (create_graph=True) use RqSpline(backend='autograd')"
            )
        x, col = ctx.saved_tensors
        grad_x, sums = backward(x, col, ctx.table, grad_out.contiguous(), grad_log.contiguous(),
                                parameters=any(ctx.needs_input_grad[1:4]))
        if sums is None:
            return grad_x, None, None, None, None
        grads = tables_backward(ctx.params64, ctx.settings, sums, ctx.bins)
        return grad_x, *(g.to(dtype) for g, dtype in zip(grads, ctx.dtypes, strict=True)), None
