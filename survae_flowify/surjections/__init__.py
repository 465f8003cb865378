"""SurVAE's own surjections and stochastic layers (Nielsen et al. 2020, table 1).

Abs, Sort, MaxPool2d (inference surjections, exact); StochasticPermutation (stochastic in both
directions, a bound in general); VariationalDequantize and VAE (bounds with learned noise).
"""

from survae_flowify.surjections.abs import Abs
from survae_flowify.surjections.maxpool import MaxPool2d
from survae_flowify.surjections.permutation import StochasticPermutation
from survae_flowify.surjections.sort import Sort
from survae_flowify.surjections.vae import VAE
from survae_flowify.surjections.variational_dequantize import VariationalDequantize

__all__ = ["VAE", "Abs", "MaxPool2d", "Sort", "StochasticPermutation", "VariationalDequantize"]
