"""The algebra: transforms, composites and flows (DESIGN.md §1)."""

from survae_flowify.algebra.flow import AugmentationGap, Breakdown, Flow
from survae_flowify.algebra.sequential import Sequential
from survae_flowify.algebra.transform import (
    Bijection,
    GenerativeSurjection,
    InferenceSurjection,
    Transform,
)

__all__ = [
    "AugmentationGap",
    "Bijection",
    "Breakdown",
    "Flow",
    "GenerativeSurjection",
    "InferenceSurjection",
    "Sequential",
    "Transform",
]
