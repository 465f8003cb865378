"""Generic layers: structure, activations, dequantization, slicing, augmentation, repetition."""

from survae_flowify.transforms.activations import LeakyReLU
from survae_flowify.transforms.augment import Augment
from survae_flowify.transforms.dequantize import Dequantize
from survae_flowify.transforms.nflows_adapter import NflowsBijection
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
