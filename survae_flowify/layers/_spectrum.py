r"""Helpers of :class:`~survae_flowify.layers.fourier.FourierConv2d`: the half-spectrum layout of
a real 2-D FFT and the Lie-algebra maps onto the unitary and rotation groups, batched.

**Layout.** ``torch.fft.rfft2`` of a real ``H × W`` image keeps the ``G = H·(⌊W/2⌋ + 1)``
frequencies ``(u, v)``, ``0 ≤ v ≤ ⌊W/2⌋``. A real image has ``X(−u, −v) = conj X(u, v)``, so:

* the *self-conjugate* frequencies (``u ∈ {0, H/2}``, ``v ∈ {0, W/2}``, the halves only for even
  sizes: DC and the Nyquist row, column and corner; ``S ≤ 4`` of them) hold real values;
* in the columns ``v = 0`` and ``v = W/2`` the grid holds both ``(u, v)`` and its conjugate
  ``(−u, v)``: the one with ``0 < u < H/2`` represents the pair, the other mirrors it;
* every other grid frequency represents its pair alone.

With ``P`` representatives, ``S + 2P = H·W``: a matrix per independent frequency (``P`` complex,
``S`` real) is gathered onto the grid by :meth:`Layout.gather` (conjugated at the mirrors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["Layout", "complex_dtype", "maybe_parameter", "orthogonal_from", "unitary_from"]


def complex_dtype(like: Tensor) -> torch.dtype:
    """The complex dtype of ``like``'s real dtype (float32 → complex64, float64 → complex128)."""
    return torch.complex128 if like.dtype == torch.float64 else torch.complex64


@dataclass(frozen=True)
class Layout:
    """Where every rfft2-grid frequency of an ``H × W`` image comes from.

    ``source[g]``: index into the list ``[P representatives, S self-conjugate]`` for grid
    position ``g = u·(⌊W/2⌋+1) + v``; ``mirror[g]``: whether the grid holds the conjugate there.
    """

    height: int
    width: int
    pairs: int
    self_conjugate: int
    source: Tensor  # (G,) long
    mirror: Tensor  # (G,) bool

    @staticmethod
    def of(height: int, width: int) -> Layout:
        cols = width // 2 + 1
        reps: dict[tuple[int, int], int] = {}
        selfs: dict[tuple[int, int], int] = {}
        for u in range(height):
            for v in range(cols):
                conj = ((-u) % height, (-v) % width)
                if conj == (u, v):
                    selfs[u, v] = len(selfs)
                elif conj not in reps:  # the mirror of a stored pair comes later in its column
                    reps[u, v] = len(reps)
        source, mirror = [], []
        for u in range(height):
            for v in range(cols):
                if (u, v) in selfs:
                    source.append(len(reps) + selfs[u, v])
                    mirror.append(False)
                elif (u, v) in reps:
                    source.append(reps[u, v])
                    mirror.append(False)
                else:
                    source.append(reps[(-u) % height, (-v) % width])
                    mirror.append(True)
        if len(selfs) + 2 * len(reps) != height * width:
            raise AssertionError("rfft2 layout: frequencies do not account for every pixel")
        return Layout(height, width, len(reps), len(selfs), torch.tensor(source),
                      torch.tensor(mirror))

    def gather(self, per_frequency: Tensor) -> Tensor:
        """``(P + S, …)`` complex → ``(H, ⌊W/2⌋+1, …)``: each grid frequency's value, conjugated
        at the mirrors, so that a product with a real image's spectrum stays Hermitian."""
        grid = per_frequency[self.source.to(per_frequency.device)]
        mirror = self.mirror.to(per_frequency.device).view(-1, *([1] * (grid.dim() - 1)))
        grid = torch.where(mirror, grid.conj(), grid)
        return grid.reshape(self.height, self.width // 2 + 1, *grid.shape[1:])


def unitary_from(raw: Tensor | None, count: int, n: int, like: Tensor) -> Tensor:
    r"""``count`` unitary ``n × n`` matrices ``exp(A)``, ``A`` skew-Hermitian, from the ``n²`` real
    numbers of each ``raw[k]`` (``(count, n, n)``): the strict upper triangle is ``Re A``, the
    strict lower triangle ``Im A`` (mirrored), the diagonal ``Im A_ii``. ``n²`` is the dimension of
    ``𝔲(n)``, so no number is dead; ``exp`` maps ``𝔲(n)`` onto the connected group ``U(n)``.
    ``raw=None`` (``count = 0``) gives an empty batch of dtype ``complex(like.dtype)``."""
    if raw is None:
        return torch.zeros(count, n, n, dtype=complex_dtype(like), device=like.device)
    upper = torch.triu(raw, 1)
    lower = torch.tril(raw, -1).mT
    real = upper - upper.mT
    imag = lower + lower.mT + torch.diag_embed(raw.diagonal(dim1=-2, dim2=-1))
    return torch.matrix_exp(torch.complex(real, imag))


def orthogonal_from(raw: Tensor | None, count: int, n: int, like: Tensor) -> Tensor:
    r"""``count`` rotations ``exp(A − Aᵀ) ∈ SO(n)`` from ``raw`` (``(count, n(n−1)/2)``, the strict
    upper triangle of ``A``); ``raw=None`` when ``n = 1`` (``SO(1) = {1}``) gives identities."""
    if raw is None:
        return torch.eye(n, dtype=like.dtype, device=like.device).expand(count, n, n)
    rows, cols = torch.triu_indices(n, n, 1, device=raw.device)
    a = raw.new_zeros(count, n, n)
    a[:, rows, cols] = raw
    return torch.matrix_exp(a - a.mT)


def maybe_parameter(*shape: int) -> nn.Parameter | None:
    """A zero parameter of ``shape``, or ``None`` when it would hold no number."""
    if 0 in shape:
        return None
    return nn.Parameter(torch.zeros(shape))
