"""Battery cases for the conditional layers: inverse densities that see a flow context.

Every case sets ``context_features``: the battery feeds it a fixed context of shape ``(B, c)``
at every call (log-det against autograd at that context, gradcheck in ``x`` and the context).
"""

from __future__ import annotations

import survae_flowify as ffn
from tests.cases.base import Case


def _conditional_residual() -> ffn.Residual:
    f = ffn.Sequential(ffn.Linear(3, 5),
                       ffn.Linear(5, 3, inverse_density="conditional", context_features=2))
    return ffn.Residual(f)


CASES: dict[str, Case] = {
    "slice_context": Case(
        lambda: ffn.Slice(6, 2, inverse_density="conditional", context_features=3), (6,),
        log_det=False, context_features=3,
    ),
    "slice_context_image": Case(
        lambda: ffn.Slice((4, 3, 3), 1, inverse_density="conditional", context_features=2),
        (4, 3, 3), log_det=False, context_features=2,
    ),
    "linear_reducing_context": Case(
        lambda: ffn.Linear(5, 2, inverse_density="conditional", context_features=3), (5,),
        log_det=False, context_features=3,
    ),
    "patch_linear_context": Case(
        lambda: ffn.PatchLinear(6, 2, inverse_density="conditional", context_features=3),
        (6, 3, 3), log_det=False, context_features=3,
    ),
    "conv2d_context": Case(
        lambda: ffn.Conv2d(1, 2, 2, 2, context_features=2, image_size=4), (1, 4, 4),
        log_det=False, context_features=2,
    ),
    "residual_context": Case(_conditional_residual, (3,), log_det=False, context_features=2),
    "sequential_context": Case(
        lambda: ffn.Sequential(ffn.Linear(4, 4), ffn.LeakyReLU(0.5),
                               ffn.Slice(4, 3, inverse_density="conditional", context_features=2),
                               ffn.Linear(3, 2, inverse_density="conditional", context_features=2)),
        (4,), log_det=False, context_features=2,
    ),
}
