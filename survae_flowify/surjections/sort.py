r"""The sorting inference surjection (SurVAE Flows, Nielsen et al. 2020, §4 and table 1)."""

from __future__ import annotations

import math

from torch import Tensor

from survae_flowify.algebra.transform import InferenceSurjection
from survae_flowify.surjections.permutation import check_vectors, permute_randomly

__all__ = ["Sort"]


class Sort(InferenceSurjection):
    r"""``z = sort(x)``, ascending along dimension 1 of ``(B, D)``; the order is what is dropped.

    The ``D!`` orderings of ``x`` all map to the same ``z`` in the sorted cone
    ``{z_1 ≤ … ≤ z_D}``, each with unit Jacobian. With the order drawn uniformly in the inverse,
    ``p(x) = p(z) / D!`` exactly (ties have probability zero), so the contribution is

    $$V = \log p(\text{order} \mid z) = -\log D! = -\log Γ(D + 1).$$

    Inverse: ``x = π z`` with ``π`` uniform over the permutations, independently per sample;
    ``mean=True`` returns ``z`` itself (the identity order: there is no mean permutation, and
    ``z`` is a preimage). ``forward(inverse(z)) = z`` holds exactly for sorted ``z``, so the
    layer is exact. A flow behind ``Sort`` should put its mass on the sorted cone (the mass it
    puts elsewhere is lost to ``x``).
    """

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_vectors(self, x, "x")
        z = x.sort(dim=1).values
        return z, x.new_full((x.shape[0],), -math.lgamma(x.shape[1] + 1))

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        check_vectors(self, z, "z")
        return z.clone() if mean else permute_randomly(z)
