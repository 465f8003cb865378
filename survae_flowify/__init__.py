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
from survae_flowify.bijections import AffineCoupling, MaskedAutoregressive, RqCoupling
from survae_flowify.conversion import flowify, register_converter
from survae_flowify.distributions import DiagonalNormal, StandardNormal
from survae_flowify.layers import Conv2d, Linear, Pad, PatchLinear, Residual, Unfold
from survae_flowify.transforms import (
    Augment,
    Dequantize,
    Flatten,
    LeakyReLU,
    NflowsBijection,
    Repeat,
    Reshape,
    RqSpline,
    Slice,
)

__version__ = "0.1.0"

__all__ = [
    "AffineCoupling",
    "Augment",
    "AugmentationGap",
    "Bijection",
    "Conv2d",
    "Breakdown",
    "Dequantize",
    "DiagonalNormal",
    "Flatten",
    "Flow",
    "GenerativeSurjection",
    "InferenceSurjection",
    "LeakyReLU",
    "Linear",
    "MaskedAutoregressive",
    "NflowsBijection",
    "Pad",
    "PatchLinear",
    "Repeat",
    "Residual",
    "Reshape",
    "RqCoupling",
    "RqSpline",
    "Sequential",
    "Slice",
    "StandardNormal",
    "Transform",
    "Unfold",
    "flowify",
    "noise_off",
    "register_converter",
    "validation",
]
