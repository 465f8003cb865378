"""Generic layers: structure, activations, dequantization, slicing, augmentation, repetition.

``NflowsBijection`` (the nflows adapter) is imported on first access, so that this package, and
every layer that uses its spline kernel, imports without the optional nflows extra.
"""

from importlib import util as _importlib_util

from survae_flowify.transforms.activations import LeakyReLU
from survae_flowify.transforms.augment import Augment
from survae_flowify.transforms.dequantize import Dequantize
from survae_flowify.transforms.repeat import Repeat
from survae_flowify.transforms.slice import Slice
from survae_flowify.transforms.spline import RqSpline
from survae_flowify.transforms.structure import Flatten, Reshape

__all__ = [
    "Augment",
    "Dequantize",
    "Flatten",
    "LeakyReLU",
    "NflowsBijection",
    "Repeat",
    "Reshape",
    "RqSpline",
    "Slice",
]


def __getattr__(name: str) -> object:
    if name == "NflowsBijection":  # raises the ImportError with the install hint without nflows
        from survae_flowify.transforms.nflows_adapter import NflowsBijection

        globals()[name] = NflowsBijection  # later accesses skip this hook
        return NflowsBijection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _nflows_available() -> bool:
    """Whether the optional ``nflows`` package can be imported (found, without importing it)."""
    try:
        return _importlib_util.find_spec("nflows") is not None
    except (ImportError, ValueError):  # blocked by an import hook, or set to None in sys.modules
        return False


if not _nflows_available():  # ``from survae_flowify.transforms import *`` must not fail on it
    __all__.remove("NflowsBijection")
