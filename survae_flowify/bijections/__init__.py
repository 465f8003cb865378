"""Native bijections: coupling layers and masked autoregressive layers (DESIGN.md §9)."""

from survae_flowify.bijections.autoregressive import MaskedAutoregressive
from survae_flowify.bijections.couplings import AffineCoupling, RqCoupling

__all__ = ["AffineCoupling", "MaskedAutoregressive", "RqCoupling"]
