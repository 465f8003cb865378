r"""The spline kernel's per-entry loops in C (``_rq_native.c``), compiled on first use.

:class:`~survae_flowify.transforms._rq_kernel._SharedSpline` evaluates ``g(x)`` and
``log g'(x)`` for every entry with about a dozen elementwise PyTorch operations forward and two
dozen backward, each one pass over memory; on a CPU those passes, not the arithmetic, are the
cost (``torch.compile`` of the same formulas was no faster: 4.3 against 4.9 ms forward and backward
for 256×512 entries, one thread). The C loops do one pass per direction: the grid lookup, one
read of the entry's table row, the rational function, and in the backward the seven per-column
sums, accumulated in ``float64``.

The loops are plain C (no PyTorch headers), so compiling them takes well under a second. The
shared library is built with the system's C compiler (``$CC``, else ``cc``) at ``-O3
-march=native`` and kept in a cache directory (``$SURVAE_FLOWIFY_CACHE``, else
``$XDG_CACHE_HOME/survae_flowify`` or ``~/.cache/survae_flowify``), under a name hashed from the
source, the flags, the compiler's version and the CPU's model and flags (a library built for
one CPU is never loaded on another). It is written to a temporary file and renamed into place, so
processes that compile at once (DDP workers) never see half a file. It is loaded with
:mod:`ctypes`. The loops run on one thread: splitting a 256×512 or 1024×512 input over two
threads (a pool of Python threads; ctypes releases the GIL) was no faster on a two-core machine,
where the pass over memory and its page faults, not the arithmetic, bound it.

Used for float32 and float64 CPU tensors, outside ``torch.compile`` tracing (which keeps the
PyTorch kernel: no graph break), and only when the grid lookup is in use. Without a C compiler,
or with ``SURVAE_FLOWIFY_NATIVE=0``, the PyTorch kernel runs instead: the same function to float
rounding. ``SURVAE_FLOWIFY_NATIVE=1`` makes a failed build an error rather than a fallback.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["available", "backward", "disabled", "forward", "library", "usable"]

_SOURCE = Path(__file__).with_name("_rq_native.c")
_FLAGS = ("-O3", "-march=native", "-std=c99", "-shared", "-fPIC")
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


def _build() -> ctypes.CDLL:
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        raise NativeBuildError(f"no C compiler found (looked for {os.environ.get('CC', 'cc')!r} on PATH)")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, " ".join(_FLAGS).encode(), version.encode(),
                                      _cpu_signature().encode()])).hexdigest()[:20]
    target = _cache_dir() / f"rq_native-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            run = subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", partial, "-lm"],
                                 capture_output=True, text=True, check=False)
            if run.returncode != 0:
                raise NativeBuildError(f"{compiler} failed on {_SOURCE.name}:\n{run.stderr.strip()}")
            os.replace(partial, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
    lib = ctypes.CDLL(str(target))
    p, i64, f32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_double
    for suffix, real in (("f32", f32), ("f64", f64)):
        getattr(lib, f"rq_forward_{suffix}").argtypes = [p, i64, p, p, real, real, real, p, p, p]
        getattr(lib, f"rq_backward_{suffix}").argtypes = [p, p, i64, p, p, p, p, p]
        getattr(lib, f"rq_forward_{suffix}").restype = None
        getattr(lib, f"rq_backward_{suffix}").restype = None
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernel (built on the first call), or ``None`` where it cannot be built or is
    switched off (``SURVAE_FLOWIFY_NATIVE=0``)."""
    setting = os.environ.get(_ENV, "").strip()
    if setting == "0":
        return None
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


def usable(x: Tensor, columns: Tensor, cells: int) -> bool:
    """Whether :func:`forward` applies: float32/float64 on a CPU, the grid lookup in use, an
    ``int16`` column index, not while ``torch.compile`` traces, and the kernel available."""
    return (cells > 0 and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and columns.dtype == x.dtype and columns.shape[1] <= _INT16_COLUMNS
            and not getattr(_switch, "off", False) and not torch.compiler.is_compiling()
            and library() is not None)


def pack(columns: Tensor) -> Tensor:
    """``(7, C)`` column table → ``(C, 8)``: one entry's coefficients side by side."""
    table = columns.new_zeros((columns.shape[1], 8))
    table[:, :7] = columns.detach().t()
    return table


def forward(x: Tensor, table: Tensor, ahead: Tensor, bound: float, cells: int
            ) -> tuple[Tensor, Tensor, Tensor]:
    """``(g(x), log g'(x), column as int16)`` for a contiguous flat ``x`` and a :func:`pack`\\ ed table."""
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
    """``(∂/∂x, ∂/∂columns (7, C) or None)`` of ``Σ ḡ·g + ℓ̄·log g'``, from :func:`forward`'s
    state; ``grad_out`` and ``grad_log`` contiguous, of ``x``'s shape and dtype."""
    lib = library()
    assert lib is not None
    grad_x = torch.empty_like(x)
    sums = torch.zeros((table.shape[0], 8), dtype=torch.float64) if parameters else None
    fn = lib.rq_backward_f32 if x.dtype == torch.float32 else lib.rq_backward_f64
    fn(x.data_ptr(), col.data_ptr(), x.shape[0], table.data_ptr(), grad_out.data_ptr(),
       grad_log.data_ptr(), grad_x.data_ptr(), None if sums is None else sums.data_ptr())
    if sums is None:
        return grad_x, None
    return grad_x, sums[:, :7].t().to(x.dtype)
