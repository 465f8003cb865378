"""Base distributions, inverse densities and augmenting noise."""

from survae_flowify.distributions.conditional import (
    ConditionalNormalDensity,
    DiagonalNormalDensity,
    InverseDensity,
    StandardNormalDensity,
    make_inverse_density,
)
from survae_flowify.distributions.noise import Noise
from survae_flowify.distributions.normal import ConditionalNormal, DiagonalNormal, StandardNormal

__all__ = [
    "ConditionalNormal",
    "ConditionalNormalDensity",
    "DiagonalNormal",
    "DiagonalNormalDensity",
    "InverseDensity",
    "Noise",
    "StandardNormal",
    "StandardNormalDensity",
    "make_inverse_density",
]
