"""SurVAE's own surjections (Nielsen et al. 2020, table 1): Abs, Sort, MaxPool2d (inference,
exact) and StochasticPermutation (stochastic in both directions)."""

from survae_flowify.surjections.abs import Abs

__all__ = ["Abs"]
