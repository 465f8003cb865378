"""Native bijections (DESIGN.md §9): couplings, masked autoregressive layers, ActNorm, 1×1
convolutions, permutations and Squeeze."""

from survae_flowify.bijections.actnorm import ActNorm
from survae_flowify.bijections.autoregressive import MaskedAutoregressive
from survae_flowify.bijections.conv1x1 import Conv1x1
from survae_flowify.bijections.couplings import AffineCoupling, RqCoupling
from survae_flowify.bijections.permutations import Permute, Reverse
from survae_flowify.bijections.squeeze import Squeeze

__all__ = ["ActNorm", "AffineCoupling", "Conv1x1", "MaskedAutoregressive", "Permute", "Reverse", "RqCoupling",
           "Squeeze"]
