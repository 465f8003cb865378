"""survae_flowify: flowified neural-network layers in a SurVAE algebra.

``import survae_flowify as ffn``; see DESIGN.md §7 for the public names.
"""

from survae_flowify._state import noise_off, validation
from survae_flowify.algebra import (
    AugmentationGap,
    Bijection,
    Breakdown,
    Flow,
    GenerativeSurjection,
    InferenceSurjection,
    Sequential,
    Transform,
)
from survae_flowify.bijections import (
    ActNorm,
    AffineCoupling,
    Conv1x1,
    MaskedAutoregressive,
    Permute,
    Reverse,
    RqCoupling,
    Squeeze,
)
from survae_flowify.conversion import flowify, register_converter
from survae_flowify.distributions import ConditionalNormal, DiagonalNormal, StandardNormal
from survae_flowify.distributions.mixture import MixtureOfGaussians
from survae_flowify.layers import Conv2d, Linear, Pad, PatchLinear, Residual, Unfold
from survae_flowify.surjections import Abs, MaxPool2d, Sort, StochasticPermutation
from survae_flowify.transforms import (
    Augment,
    Dequantize,
    Flatten,
    LeakyReLU,
    Repeat,
    Reshape,
    RqSpline,
    Slice,
    _nflows_available,
)

__version__ = "0.1.0"

__all__ = [
    "Abs",
    "ActNorm",
    "AffineCoupling",
    "Augment",
    "AugmentationGap",
    "Bijection",
    "Breakdown",
    "ConditionalNormal",
    "Conv1x1",
    "Conv2d",
    "Dequantize",
    "DiagonalNormal",
    "Flatten",
    "Flow",
    "GenerativeSurjection",
    "InferenceSurjection",
    "LeakyReLU",
    "Linear",
    "MaskedAutoregressive",
    "MaxPool2d",
    "MixtureOfGaussians",
    "NflowsBijection",
    "Pad",
    "PatchLinear",
    "Permute",
    "Repeat",
    "Reshape",
    "Residual",
    "Reverse",
    "RqCoupling",
    "RqSpline",
    "Sequential",
    "Slice",
    "Sort",
    "Squeeze",
    "StandardNormal",
    "StochasticPermutation",
    "Transform",
    "Unfold",
    "flowify",
    "noise_off",
    "register_converter",
    "validation",
]

# NflowsBijection needs the optional nflows extra: imported on first access (an ImportError with
# the install hint without nflows), and left out of ``import *`` when nflows is not there.
if not _nflows_available():
    __all__.remove("NflowsBijection")


def __getattr__(name: str) -> object:
    if name == "NflowsBijection":
        from survae_flowify.transforms import NflowsBijection

        return NflowsBijection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
