"""The flowified layers of the paper: Linear, convolutions, residual connections (DESIGN.md §2)."""

from survae_flowify.layers.linear import Linear
from survae_flowify.layers.rotations import Rotation

__all__ = ["Linear", "Rotation"]
