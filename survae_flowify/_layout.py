"""The position-major row layout shared by the patch kernels and their map densities.

A map ``(B, C, H, W)`` whose rows ``(H·W·B, C)`` (position-major, the batch fastest) are a view:
:class:`~survae_flowify.layers.unfold.Unfold` lays its patches out so, the kernel of
:class:`~survae_flowify.PatchLinear` applies its Linear to those rows, and the conditional map
densities (:mod:`survae_flowify.distributions.conditional`) keep their outputs in the same
layout: elementwise work between tensors of different layouts is several times slower on a CPU.
The kernel's output map is this layout too (a view of its rows): the spline that follows works in
memory order (both of its kernels flatten through ``_rq_kernel._per_entry``), so it needs no copy; a
channels-last copy, which paid while the spline flattened its input, measured the same
(FCONV1-MNIST, train 265–276 against 269–270 ms, eval 98–102 against 103–104 ms, interleaved).
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["to_map", "to_rows"]


def to_rows(v: Tensor) -> Tensor:
    """``(B, C, H, W) → (H·W·B, C)``: one row per position (a view for maps laid out so, else a
    copy)."""
    return v.permute(2, 3, 0, 1).reshape(-1, v.shape[1])


def to_map(rows: Tensor, b: int, h: int, w: int) -> Tensor:
    """``(H·W·B, C) → (B, C, H, W)``, the inverse of :func:`to_rows`, a view (``C`` from the rows:
    ``B`` may be 0)."""
    return rows.reshape(h, w, b, rows.shape[1]).permute(2, 3, 0, 1)
