r"""Orthogonal matrices for the flowified Linear (DESIGN.md §2, paper appendix G).

Each parametrization is a small module holding an ``n × n`` orthogonal matrix

.. math:: Q = Q_0\,D, \qquad Q_0 \in SO(n) \text{ from the parameters}, \quad
          D = \mathrm{diag}(1, \dots, 1, \det Q)

where ``D`` is a fixed buffer (``signs``): it lets a layer reach both components of ``O(n)``
(a trained ``nn.Linear`` may have a weight of negative determinant), while training never
crosses between them. All start at ``Q = D`` (the identity for ``det = +1``).

* :class:`Householder` (``"householder"``, the default): ``Q_0 = −H_1 ⋯ H_k`` with reflectors
  ``H_i = I − 2 v_i v_iᵀ / ‖v_i‖²``. With ``k = n`` every rotation is reached (Cartan–Dieudonné:
  a product of ``n`` reflections has determinant ``(−1)^n``, and every such matrix is one, so
  ``−H_1⋯H_n`` covers ``SO(n)``). The product is applied in the compact "UT transform"
  ``H_1 ⋯ H_k = I − Y S^{-1} Yᵀ``, ``Y = [v_1, …, v_k]``,
  ``S = ½ diag(YᵀY) + strict_upper(YᵀY)`` (one triangular solve), so a batch of ``N`` rows costs
  ``O(N n k)`` without forming ``Q``; ``Q`` is formed instead when that is cheaper (``N ≳ n``).
  With ``k < n`` reflectors the first ``k`` columns of ``Q`` still range over *every*
  orthonormal ``k``-frame (the Householder QR argument), but the remaining columns are tied to
  them; :class:`~survae_flowify.layers.linear.Linear` uses this only where the other columns
  do not matter (``reflectors="minimal"``).
* :class:`Cayley` (``"cayley"``): ``Q_0 = (I − A)(I + A)^{-1}``, ``A = P − Pᵀ`` skew; reaches the
  rotations without eigenvalue ``−1``.
* :class:`MatrixExp` (``"exp"``): ``Q_0 = \exp(P − Pᵀ)``, the Lie-algebra map of the paper's
  appendix G; onto ``SO(n)``.

Conventions: batches hold row vectors ``x`` of shape ``(N, n)``; :meth:`Rotation.matvec` returns
the rows ``Q x`` (that is ``x Qᵀ``) and :meth:`Rotation.rmatvec` the rows ``Qᵀ x``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["Cayley", "Householder", "MatrixExp", "Rotation", "RotationKind", "make_rotation"]

RotationKind = Literal["householder", "cayley", "exp"]
ROTATION_KINDS = ("householder", "cayley", "exp")

# Rough flop weights of forming Q for the dense maps (LU solve, scaling-and-squaring Padé).
_CAYLEY_FORM_COST = 3
_EXP_FORM_COST = 10


class Rotation(nn.Module):
    """Base class: ``Q = Q_0 D`` with ``Q_0 ∈ SO(n)`` from the parameters and ``D`` fixed.

    Subclasses implement :meth:`base_matrix` (and may override :meth:`_base_matvec` /
    :meth:`_base_rmatvec` when applying ``Q_0`` is cheaper than forming it) and
    :meth:`_assign_base`.
    """

    def __init__(self, n: int) -> None:
        super().__init__()
        if not (isinstance(n, int) and not isinstance(n, bool) and n > 0):
            raise ValueError(f"{type(self).__name__}: n must be a positive int, got {n!r}")
        self.n = n
        self.register_buffer("signs", torch.ones(n))

    def extra_repr(self) -> str:
        return f"n={self.n}"

    @property
    def det(self) -> int:
        """The determinant of :meth:`matrix`, ``+1`` or ``−1`` (fixed; see :meth:`assign`)."""
        return int(self.signs[-1].item())

    # --- what subclasses provide -------------------------------------------------------------
    def base_matrix(self) -> Tensor:
        """``Q_0`` of shape ``(n, n)``."""
        raise NotImplementedError

    def form_cost(self) -> int:
        """Rough multiply-adds to form ``Q_0``."""
        raise NotImplementedError

    def _assign_base(self, q0: Tensor) -> None:
        raise NotImplementedError

    def _base_matvec(self, x: Tensor) -> Tensor:
        return x @ self.base_matrix().T

    def _base_rmatvec(self, x: Tensor) -> Tensor:
        return x @ self.base_matrix()

    # --- derived ----------------------------------------------------------------------------
    def apply_cost(self, rows: int) -> int:
        """Rough multiply-adds of :meth:`matvec` on ``rows`` rows."""
        return self.form_cost() + rows * self.n * self.n

    def matrix(self) -> Tensor:
        """``Q = Q_0 D``, shape ``(n, n)``, orthogonal."""
        return self.base_matrix() * self.signs

    def matvec(self, x: Tensor) -> Tensor:
        """Rows ``Q x`` for ``x`` of shape ``(N, n)`` (``= x Qᵀ = x D Q_0ᵀ``)."""
        return self._base_matvec(x * self.signs)

    def rmatvec(self, x: Tensor) -> Tensor:
        """Rows ``Qᵀ x`` for ``x`` of shape ``(N, n)`` (``= x Q_0 D``)."""
        return self._base_rmatvec(x) * self.signs

    @torch.no_grad()
    def assign(self, q: Tensor) -> None:
        """Set the parameters (and the determinant buffer) so that :meth:`matrix` equals ``q``.

        ``q``: an orthogonal ``(n, n)`` matrix of either determinant. Raises ``ValueError`` when
        this parametrization cannot represent it (Cayley: an eigenvalue ``−1``).
        """
        q = q.detach().to(torch.float64)
        if q.shape != (self.n, self.n):
            raise ValueError(f"{type(self).__name__}: expected a ({self.n}, {self.n}) matrix, got "
                             f"{tuple(q.shape)}")
        signs = torch.ones(self.n, dtype=torch.float64)
        signs[-1] = 1.0 if torch.linalg.det(q) > 0 else -1.0
        self._assign_base(q * signs)
        self.signs.copy_(signs)


class Householder(Rotation):
    r"""``Q_0 = −H_1 ⋯ H_k``, ``H_i = I − 2 v_i v_iᵀ/‖v_i‖²`` (parameters: the rows ``v_i``).

    Applied as ``Q_0 = Y S^{-1} Yᵀ − I`` with ``Y = [v_1 … v_k]`` and
    ``S = ½ diag(YᵀY) + strict_upper(YᵀY)``; starts at ``v_i = e_i`` where ``Q_0 = I`` for
    ``k = n``. ``reflectors=k < n`` keeps only the first ``k`` columns of ``Q`` free.
    """

    def __init__(self, n: int, *, reflectors: int | None = None) -> None:
        super().__init__(n)
        k = n if reflectors is None else reflectors
        if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= n):
            raise ValueError(f"Householder: reflectors must be an int in [1, {n}], got {reflectors!r}")
        self.reflectors = k
        self.vectors = nn.Parameter(torch.eye(k, n))

    def extra_repr(self) -> str:
        return f"n={self.n}, reflectors={self.reflectors}"

    @property
    def det(self) -> int:
        # −H_1⋯H_k has determinant (−1)^(n+k); with k = n that is +1.
        return super().det * (-1) ** (self.n + self.reflectors)

    def _triangle(self) -> Tensor:
        gram = self.vectors @ self.vectors.T
        return torch.triu(gram, 1) + torch.diag_embed(0.5 * gram.diagonal())

    def base_matrix(self) -> Tensor:
        v = self.vectors
        solved = torch.linalg.solve_triangular(self._triangle(), v, upper=True)
        return v.T @ solved - torch.eye(self.n, dtype=v.dtype, device=v.device)

    def form_cost(self) -> int:
        n, k = self.n, self.reflectors
        return n * k * k // 2 + n * n * k

    def _ut_cost(self, rows: int) -> int:
        n, k = self.n, self.reflectors
        return rows * (2 * n * k + k * k // 2)

    def apply_cost(self, rows: int) -> int:
        return min(self._ut_cost(rows), super().apply_cost(rows))

    def _use_ut(self, rows: int) -> bool:
        return self._ut_cost(rows) <= super().apply_cost(rows)

    def _base_matvec(self, x: Tensor) -> Tensor:
        if not self._use_ut(x.shape[0]):
            return super()._base_matvec(x)
        # x Q_0ᵀ = (x Y) S^{-T} Yᵀ − x
        p = x @ self.vectors.T
        r = torch.linalg.solve_triangular(self._triangle().T, p, upper=False, left=False)
        return r @ self.vectors - x

    def _base_rmatvec(self, x: Tensor) -> Tensor:
        if not self._use_ut(x.shape[0]):
            return super()._base_rmatvec(x)
        # x Q_0 = (x Y) S^{-1} Yᵀ − x
        p = x @ self.vectors.T
        r = torch.linalg.solve_triangular(self._triangle(), p, upper=True, left=False)
        return r @ self.vectors - x

    def _assign_base(self, q0: Tensor) -> None:
        """Householder QR of ``−Q_0``'s first ``k`` columns, each mapped onto ``+e_i``."""
        n, k = self.n, self.reflectors
        current = -q0[:, :k].clone()
        vectors = torch.zeros(k, n, dtype=torch.float64)
        for i in range(k):
            a = current[i:, i]
            rest = a[1:].square().sum()
            v = torch.zeros(n, dtype=torch.float64)
            v[i + 1:] = a[1:]
            # v_i = a_i − ‖a‖ without cancellation (Parlett); columns are unit vectors.
            norm = torch.sqrt(a[0].square() + rest)
            v[i] = -rest / (a[0] + norm) if a[0] > 0 else a[0] - norm
            if float(v.norm()) == 0.0:  # already e_i: a reflector that fixes e_1, …, e_i
                v[n - 1] = 1.0
            v = v / v.norm()
            vectors[i] = v
            current = current - 2 * torch.outer(v, v @ current)
        self.vectors.copy_(vectors)


class Cayley(Rotation):
    r"""``Q_0 = (I − A)(I + A)^{-1}`` with ``A = P − Pᵀ`` (parameter ``P``, starts at 0)."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.weight = nn.Parameter(torch.zeros(n, n))

    def base_matrix(self) -> Tensor:
        a = self.weight - self.weight.T
        eye = torch.eye(self.n, dtype=a.dtype, device=a.device)
        # (I − A) and (I + A) commute, so Q_0 = (I + A)^{-1}(I − A).
        return torch.linalg.solve(eye + a, eye - a)

    def form_cost(self) -> int:
        return _CAYLEY_FORM_COST * self.n**3

    def _assign_base(self, q0: Tensor) -> None:
        eye = torch.eye(self.n, dtype=torch.float64)
        if torch.linalg.cond(eye + q0) > 1e10:
            raise ValueError("Cayley: the rotation has an eigenvalue −1, which the Cayley map "
                             "cannot reach; use rotation='householder' or 'exp'")
        a = torch.linalg.solve(eye + q0, eye - q0)
        self.weight.copy_(0.25 * (a - a.T))


class MatrixExp(Rotation):
    r"""``Q_0 = exp(P − Pᵀ)`` (parameter ``P``, starts at 0): the paper's appendix G."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.weight = nn.Parameter(torch.zeros(n, n))

    def base_matrix(self) -> Tensor:
        return torch.matrix_exp(self.weight - self.weight.T)

    def form_cost(self) -> int:
        return _EXP_FORM_COST * self.n**3

    def _assign_base(self, q0: Tensor) -> None:
        # Q_0 is normal: Q_0 = P diag(e^{iθ}) P^{-1}, log Q_0 = P diag(iθ) P^{-1}, real unless
        # Q_0 has the eigenvalue −1 (then iπ has no conjugate partner).
        eigvals, eigvecs = torch.linalg.eig(q0)
        log = eigvecs @ torch.diag_embed(torch.log(eigvals)) @ torch.linalg.inv(eigvecs)
        if log.imag.abs().max() > 1e-6:
            raise ValueError("MatrixExp: the rotation has an eigenvalue −1 with no real logarithm "
                             "found; use rotation='householder'")
        skew = 0.5 * (log.real - log.real.T)
        self.weight.copy_(0.5 * skew)


def make_rotation(kind: RotationKind, n: int, *, reflectors: int | None = None) -> Rotation:
    """Build the rotation named by ``kind``; ``reflectors`` applies to ``"householder"`` only."""
    if kind == "householder":
        return Householder(n, reflectors=reflectors)
    if reflectors is not None and reflectors != n:
        raise ValueError(f"reflectors={reflectors} applies to rotation='householder' only, got {kind!r}")
    if kind == "cayley":
        return Cayley(n)
    if kind == "exp":
        return MatrixExp(n)
    raise ValueError(f"rotation must be one of {ROTATION_KINDS}, got {kind!r}")
