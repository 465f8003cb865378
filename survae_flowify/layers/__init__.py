"""The flowified layers of the paper: Linear, convolutions, residual connections (DESIGN.md §2)."""

from survae_flowify.layers.conv import Conv2d, PatchLinear
from survae_flowify.layers.fourier import FourierConv2d
from survae_flowify.layers.linear import Linear
from survae_flowify.layers.pad import Pad
from survae_flowify.layers.residual import AddHalves, Branch, Residual
from survae_flowify.layers.rotations import Rotation
from survae_flowify.layers.unfold import Unfold

__all__ = [
    "AddHalves", "Branch", "Conv2d", "FourierConv2d", "Linear", "Pad", "PatchLinear", "Residual",
    "Rotation", "Unfold",
]
