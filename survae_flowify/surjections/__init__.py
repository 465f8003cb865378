"""SurVAE's own surjections and stochastic layers (Nielsen et al., 2020, table 1)."""

from survae_flowify.surjections.vae import VAE
from survae_flowify.surjections.variational_dequantize import VariationalDequantize

__all__ = ["VAE", "VariationalDequantize"]
