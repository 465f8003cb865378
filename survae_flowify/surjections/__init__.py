"""SurVAE's own surjections (Nielsen et al. 2020, table 1): Abs, Sort, MaxPool2d (inference,
exact) and StochasticPermutation (stochastic in both directions, a bound in general)."""

from survae_flowify.surjections.abs import Abs
from survae_flowify.surjections.maxpool import MaxPool2d
from survae_flowify.surjections.permutation import StochasticPermutation
from survae_flowify.surjections.sort import Sort

__all__ = ["Abs", "MaxPool2d", "Sort", "StochasticPermutation"]
