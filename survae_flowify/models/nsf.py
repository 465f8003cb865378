r"""Neural-spline-flow coupling stacks used by the paper's "+NSF" models (appendix C).

A stack of ``n`` couplings over an event shape ``(D,)`` or ``(C, H, W)`` is

$$ \text{RqCoupling} \to \text{Reverse} \to \text{RqCoupling} \to \dots \to \text{RqCoupling}, $$

the structure of the official code's nflows stacks (``PiecewiseRationalQuadraticCouplingTransform``
with ``ReversePermutation`` between each two), now on the native
:class:`~survae_flowify.RqCoupling`: the first ``⌊D/2⌋`` features (channels) pass and condition a
5-bin rational-quadratic spline with linear tails beyond ``±3`` on each of the others; the
reversal lets the next coupling transform the half that passed. The conditioners keep the old
hidden widths: three hidden layers of 256 for vectors, three of 32 channels for feature maps
(``RqCoupling``'s conv net: 3×3, 1×1, 1×1 hidden convolutions and a 3×3 output, where nflows'
used 3×3 throughout). Contribution: the sum of the couplings' ``Σ_j log g_j'(x_{b,j})``, shape
``(B,)``; the reversals add 0.
"""

from __future__ import annotations

from survae_flowify import _checks
from survae_flowify.algebra import Sequential, Transform
from survae_flowify.bijections import Reverse, RqCoupling

__all__ = ["nsf_stack"]

DENSE_HIDDEN = (256, 256, 256)  # the official code's dense conditioner
CONV_HIDDEN = (32, 32, 32)  # ... and its convolutional one (channels)
NUM_BINS = 5
TAIL_BOUND = 3.0


def nsf_stack(shape: tuple[int, ...], num_couplings: int) -> Sequential:
    """``num_couplings`` :class:`~survae_flowify.RqCoupling` layers over ``shape`` = ``(D,)`` or
    ``(C, H, W)`` (split on dimension 1), with a :class:`~survae_flowify.Reverse` between each two."""
    shape = tuple(_checks.shape("nsf_stack", "shape", shape))
    num_couplings = _checks.positive_int("nsf_stack", "num_couplings", num_couplings)
    if len(shape) not in (1, 3):
        raise ValueError(f"nsf_stack: shape must be (D,) or (C, H, W), got {shape}")
    if shape[0] < 2:
        raise ValueError(f"nsf_stack: need at least 2 features/channels to couple, got shape {shape}")
    hidden = DENSE_HIDDEN if len(shape) == 1 else CONV_HIDDEN
    parts: list[Transform] = []
    for i in range(num_couplings):
        if i:
            parts.append(Reverse())
        parts.append(RqCoupling(shape, num_bins=NUM_BINS, tail_bound=TAIL_BOUND, hidden=hidden))
    return Sequential(*parts)
