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
``S`` real) is gathered onto the grid by :func:`gather` (conjugated at the mirrors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "Layout",
    "complex_dtype",
    "gather",
    "maybe_parameter",
    "skew_hermitian",
    "skew_symmetric",
    "to_group",
    "upper_positions",
]


def complex_dtype(like: Tensor) -> torch.dtype:
    """The complex dtype of ``like``'s real dtype (float32 → complex64, float64 → complex128)."""
    return torch.complex128 if like.dtype == torch.float64 else torch.complex64


@dataclass(frozen=True)
class Layout:
    """Where every rfft2-grid frequency of an ``H × W`` image comes from.

    ``index[g]`` for the grid position ``g = u·(⌊W/2⌋+1) + v``: ``k`` to take the ``k``-th entry of
    the list ``[P representatives, S self-conjugate]``, ``P + S + k`` to take its conjugate (a
    mirror); see :func:`gather`.
    """

    height: int
    width: int
    pairs: int
    self_conjugate: int
    index: Tensor  # (G,) long

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
        count = len(reps) + len(selfs)
        index = []
        for u in range(height):
            for v in range(cols):
                if (u, v) in selfs:
                    index.append(len(reps) + selfs[u, v])
                elif (u, v) in reps:
                    index.append(reps[u, v])
                else:
                    index.append(count + reps[(-u) % height, (-v) % width])
        if len(selfs) + 2 * len(reps) != height * width:
            raise AssertionError("rfft2 layout: frequencies do not account for every pixel")
        return Layout(height, width, len(reps), len(selfs), torch.tensor(index))


def gather(per_frequency: Tensor, index: Tensor, height: int, width: int) -> Tensor:
    """``(P + S, …)`` complex → ``(H, ⌊W/2⌋+1, …)``: each grid frequency's value, conjugated at
    the mirrors (``index`` from :class:`Layout`), so that a product with a real image's spectrum
    stays Hermitian. Real arithmetic on ``view_as_real``: one index, no conjugate views."""
    parts = torch.view_as_real(per_frequency)
    both = torch.cat([parts, torch.stack([parts[..., 0], -parts[..., 1]], dim=-1)])
    grid = torch.view_as_complex(both[index])
    return grid.reshape(height, width // 2 + 1, *grid.shape[1:])


def skew_hermitian(raw: Tensor | None, count: int, n: int, like: Tensor) -> Tensor:
    r"""``count`` skew-Hermitian ``n × n`` matrices from the ``n²`` real numbers of each ``raw[k]``
    (``(count, n, n)``): ``Re A`` from the strict upper triangle (antisymmetrised), ``Im A`` from
    the strict lower triangle (symmetrised) and the diagonal. ``n²`` is the dimension of
    ``𝔲(n)``: no number is dead. ``raw=None`` gives zeros in the complex dtype of ``like``."""
    if raw is None:
        return torch.zeros(count, n, n, dtype=complex_dtype(like), device=like.device)
    upper = torch.triu(raw, 1)
    lower = torch.tril(raw, -1).mT
    imag = lower + lower.mT + torch.diag_embed(raw.diagonal(dim1=-2, dim2=-1))
    return torch.complex(upper - upper.mT, imag)


def skew_symmetric(raw: Tensor | None, upper: Tensor, count: int, n: int, like: Tensor) -> Tensor:
    r"""``count`` real skew-symmetric ``A − Aᵀ`` (as complex matrices with imaginary part 0) from
    ``raw`` (``(count, n(n−1)/2)``), the strict upper triangle of ``A`` at the flat positions
    ``upper``; zeros when ``raw`` is ``None`` (``n = 1``)."""
    if raw is None:
        return torch.zeros(count, n, n, dtype=complex_dtype(like), device=like.device)
    a = raw.new_zeros(count, n * n).index_copy(1, upper, raw).view(count, n, n)
    return torch.complex(a - a.mT, torch.zeros_like(a))


def upper_positions(n: int) -> Tensor:
    """Flat indices ``i·n + j`` of the strict upper triangle of an ``n × n`` matrix (row-major)."""
    rows, cols = torch.triu_indices(n, n, 1)
    return rows * n + cols


def to_group(a: Tensor, kind: str) -> Tensor:
    r"""Skew-Hermitian ``A`` (a batch) to unitary matrices: ``"cayley"``: ``(I − A)(I + A)^{-1}``
    (one batched LU solve; every unitary without eigenvalue ``−1``), ``"exp"``: ``exp(A)`` (onto
    ``U(n)``). A real skew-symmetric ``A`` gives a real rotation (imaginary part exactly 0)."""
    if kind == "exp":
        return torch.matrix_exp(a)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return torch.linalg.solve(eye + a, eye - a)  # (I + A) and (I − A) commute


def maybe_parameter(*shape: int) -> nn.Parameter | None:
    """A zero parameter of ``shape``, or ``None`` when it would hold no number."""
    if 0 in shape:
        return None
    return nn.Parameter(torch.zeros(shape))
