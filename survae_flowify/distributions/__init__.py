"""Base distributions, inverse densities and augmenting noise."""

from survae_flowify.distributions.conditional import (
    ConditionalNormal,
    DiagonalNormalDensity,
    InverseDensity,
    StandardNormalDensity,
    make_inverse_density,
)
from survae_flowify.distributions.noise import Noise
from survae_flowify.distributions.normal import DiagonalNormal, StandardNormal

__all__ = [
    "ConditionalNormal",
    "DiagonalNormal",
    "DiagonalNormalDensity",
    "InverseDensity",
    "Noise",
    "StandardNormal",
    "StandardNormalDensity",
    "make_inverse_density",
]
