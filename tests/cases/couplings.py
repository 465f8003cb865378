"""Battery cases for the native couplings and autoregressive layers (survae_flowify.bijections)."""

from __future__ import annotations

import survae_flowify as ffn
from tests.cases.base import Case

CASES: dict[str, Case] = {
    "affine_coupling": Case(lambda: ffn.AffineCoupling(5, hidden=8), (5,)),
    "affine_coupling_context": Case(lambda: ffn.AffineCoupling(4, hidden=8, context_features=3), (4,),
                                    context_features=3),
    "affine_coupling_image": Case(lambda: ffn.AffineCoupling((3, 2, 3), hidden=4), (3, 2, 3)),
    "affine_coupling_image_context": Case(
        lambda: ffn.AffineCoupling((2, 3, 2), hidden=4, context_features=3), (2, 3, 2),
        context_features=3,
    ),
    "rq_coupling": Case(lambda: ffn.RqCoupling(5, num_bins=4, tail_bound=2.0, hidden=8), (5,)),
    "rq_coupling_context": Case(lambda: ffn.RqCoupling(4, num_bins=5, hidden=8, context_features=3), (4,),
                                context_features=3),
    "rq_coupling_image": Case(lambda: ffn.RqCoupling((3, 2, 2), num_bins=4, hidden=4), (3, 2, 2)),
    "rq_coupling_image_context": Case(
        lambda: ffn.RqCoupling((2, 2, 3), num_bins=4, hidden=4, context_features=3), (2, 2, 3),
        context_features=3,
    ),
    "made_affine": Case(lambda: ffn.MaskedAutoregressive(4, hidden=8), (4,)),
    "made_affine_context": Case(lambda: ffn.MaskedAutoregressive(4, hidden=8, context_features=3), (4,),
                                context_features=3),
    "made_spline": Case(
        lambda: ffn.MaskedAutoregressive(4, transform="spline", num_bins=4, tail_bound=2.0, hidden=8),
        (4,),
    ),
    "made_spline_context": Case(
        lambda: ffn.MaskedAutoregressive(3, transform="spline", num_bins=5, hidden=(8, 6),
                                         context_features=3),
        (3,),
        context_features=3,
    ),
}
