"""Battery cases for the bound layers with learned noise: VariationalDequantize, Augment with a
conditional ``q(u | x)``, VAE. All are bounds (``exact=False``) with a stochastic forward; the
VAE's inverse is stochastic too."""

from __future__ import annotations

import torch

import survae_flowify as ffn
from tests.cases.base import Case


def _flow_noise() -> ffn.Flow:
    """A conditional flow ``q(u | x)`` for two extra entries given a 3-vector ``x``."""
    return ffn.Flow(ffn.ConditionalNormal(2, 3, hidden=8),
                    ffn.Sequential(ffn.AffineCoupling(2, hidden=8, context_features=3), ffn.Reverse()))


def _vae_flow_decoder() -> ffn.VAE:
    decoder = ffn.Flow(ffn.ConditionalNormal(4, 2, hidden=8),
                       ffn.RqCoupling(4, hidden=8, num_bins=4, context_features=2))
    return ffn.VAE(ffn.ConditionalNormal(2, 4, hidden=8), decoder)


def _levels(levels: int, shape: tuple[int, ...]):
    return lambda b, dtype: torch.randint(0, levels, (b, *shape)).to(dtype)


CASES: dict[str, Case] = {
    "variational_dequantize": Case(
        lambda: ffn.VariationalDequantize(
            8, ffn.VariationalDequantize.default_encoder(4, hidden=8, couplings=2)),
        (4,), sample_input=_levels(8, (4,)), log_det=False, gradcheck=False,
    ),
    "variational_dequantize_image": Case(
        lambda: ffn.VariationalDequantize(
            4, ffn.VariationalDequantize.default_encoder(8, hidden=8, couplings=1, coupling="spline"),
            shape=(2, 2, 2)),
        (2, 2, 2), sample_input=_levels(4, (2, 2, 2)), log_det=False, gradcheck=False,
    ),
    "augment_conditional_normal": Case(
        lambda: ffn.Augment(3, 2, noise=ffn.ConditionalNormal(2, 3, hidden=8)), (3,),
    ),
    "augment_conditional_flow": Case(lambda: ffn.Augment(3, 2, noise=_flow_noise()), (3,)),
    "augment_conditional_image": Case(
        lambda: ffn.Augment((1, 2, 2), 1, noise=ffn.ConditionalNormal((1, 2, 2), 4, hidden=8)),
        (1, 2, 2),
    ),
    "vae_normal": Case(
        lambda: ffn.VAE(ffn.ConditionalNormal(2, 5, hidden=8), ffn.ConditionalNormal(5, 2, hidden=8)),
        (5,), log_det=False,
    ),
    "vae_flow_decoder": Case(_vae_flow_decoder, (4,), log_det=False),
}
