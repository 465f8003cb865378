r"""Orthogonal matrices for the flowified Linear (DESIGN.md §2, paper appendix G).

``Rotation(n, kind)`` holds an ``n × n`` orthogonal matrix

.. math:: Q = Q_0\,D, \qquad Q_0 \in SO(n) \text{ from the parameters}, \quad
          D = \mathrm{diag}(1, \dots, 1, \det Q)

where ``D`` is a fixed buffer (``signs``): a layer can represent both components of ``O(n)``
(a trained ``nn.Linear`` may have a weight of negative determinant) while training never
crosses between them. Every kind starts at ``Q = I``.

* ``"householder"`` (default): ``Q_0 = −H_1 ⋯ H_n``, ``H_i = I − 2 v_i v_iᵀ/‖v_i‖²``, with
  ``v_i`` the ``i``-th row of the upper triangle of the parameter (``v_i`` is zero before
  position ``i``: the reflectors of a Householder QR, as in LAPACK). A product of ``n``
  reflections has determinant ``(−1)^n`` and the QR of any ``−Q_0`` with ``Q_0 ∈ SO(n)`` gives
  such reflectors (:meth:`Rotation.set_matrix` builds them), so ``−H_1⋯H_n`` covers ``SO(n)``.
  Applied in the compact "UT transform" ``H_1 ⋯ H_n = I − Yᵀ S^{-1} Y`` (rows of ``Y`` are the
  ``v_i``), ``S = ½ diag(Y Yᵀ) + strict_upper(Y Yᵀ)``. In training a batch of ``N`` rows is
  rotated block by block (64 reflectors at a time, each block one UT transform); block ``j``
  touches only the coordinates from ``64 j`` on, so the whole rotation costs ``~N n²``
  multiply-adds, as one dense product with ``Q`` would, without forming ``Q``. ``Q`` is formed
  (``~3 n³``) only in eval mode, where it is cached, or when ``N ≳ 3n``.
  Starts at ``v_i = e_i``, where ``Q_0 = I``. The entries below the diagonal are unused (their
  gradient is zero); a state dict of an older version with full vectors is converted on load to
  the same ``Q``.
* ``"cayley"``: ``Q_0 = (I − A)(I + A)^{-1}``, ``A = P − Pᵀ`` skew; reaches the rotations
  without eigenvalue ``−1``.
* ``"exp"``: ``Q_0 = \exp(P − Pᵀ)``, the Lie-algebra map of the paper's appendix G; onto
  ``SO(n)``.

Batches hold row vectors ``x`` of shape ``(N, n)``: :meth:`Rotation.rotate` returns the rows
``Q x`` (``= x Qᵀ``) and :meth:`Rotation.rotate_t` the rows ``Qᵀ x`` (``= x Q``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from survae_flowify import _checks
from survae_flowify._cache import ParameterCache

__all__ = ["Rotation", "RotationKind"]

RotationKind = Literal["householder", "cayley", "exp"]
_KINDS = ("householder", "cayley", "exp")
_ORTHOGONAL_TOL = 1e-6
_BLOCK = 64  # reflectors per block of the blocked UT transform


class Rotation(ParameterCache):
    """An orthogonal ``n × n`` matrix ``Q = Q_0 D``; see the module docstring for the kinds.

    In eval mode (without grad) :meth:`matrix` is computed once and reused while the parameter,
    the sign buffer and the kind are unchanged (:mod:`survae_flowify._cache`).
    """

    _version = 2  # 2: triangular Householder vectors (state dicts of version 1 are converted)

    def __init__(self, n: int, kind: RotationKind = "householder") -> None:
        super().__init__()
        self.n = _checks.positive_int("Rotation", "n", n)
        self.kind = _checks.choice("Rotation", "rotation", kind, _KINDS)
        init = torch.eye(n) if kind == "householder" else torch.zeros(n, n)
        self.weight = nn.Parameter(init)
        self.register_buffer("signs", torch.ones(n))

    def extra_repr(self) -> str:
        return f"n={self.n}, kind={self.kind!r}"

    # ---------------------------------------------------------------- Q_0 by kind
    def _vectors(self) -> Tensor:
        """Householder vectors as rows, ``v_i`` zero before position ``i``."""
        return torch.triu(self.weight)

    def _base(self) -> Tensor:
        p = self.weight
        eye = torch.eye(self.n, dtype=p.dtype, device=p.device)
        if self.kind == "householder":
            y = self._vectors()
            return y.T @ torch.linalg.solve_triangular(_ut_triangle(y), y, upper=True) - eye
        a = p - p.T
        if self.kind == "cayley":
            return torch.linalg.solve(eye + a, eye - a)  # (I + A) and (I − A) commute
        return torch.matrix_exp(a)

    def _compute(self) -> Tensor:
        """``Q = Q_0 D``, always recomputed."""
        return self._base() * self.signs

    def matrix(self) -> Tensor:
        """``Q``, shape ``(n, n)``; cached in eval mode without grad."""
        return self._derived("matrix", (self.weight, self.signs), self._compute, extra=self.kind)

    def _use_blocks(self, rows: int) -> bool:
        # Blocked, triangular: ~N·n² + N·64·n multiply-adds; forming Q: ~3·n³ + N·n². Only
        # while training: in eval the formed Q is cached.
        return (self.kind == "householder" and (self.training or torch.is_grad_enabled())
                and rows * (self.n + _BLOCK) < 3 * self.n**2)

    def _blocks(self) -> list[tuple[int, Tensor, Tensor]]:
        """``(start, Y_j, S_j)`` per block of ``_BLOCK`` reflectors, ``Y_j`` restricted to the
        columns from ``start`` on (the reflectors are zero before): the block is
        ``I − Y_jᵀ S_j^{-1} Y_j`` on those coordinates and the identity on the others."""
        out = []
        for j, rows in enumerate(self.weight.split(_BLOCK)):  # split: one gradient concatenation
            start = j * _BLOCK
            y = torch.triu(rows[:, start:])
            out.append((start, y, _ut_triangle(y)))
        return out

    def rotate(self, x: Tensor) -> Tensor:
        """Rows ``Q x`` for ``x`` of shape ``(N, n)``."""
        if not self._use_blocks(x.shape[0]):
            return x @ self.matrix().T
        # x Qᵀ = −(x D) B_Lᵀ ⋯ B_1ᵀ with blocks B_j of H_1 ⋯ H_n; x B_jᵀ = x − (x Y_jᵀ) S_j^{-T} Y_j
        # acts on the columns from start_j on, so the tail grows by one block each step.
        xs = x * self.signs
        tail = None
        for start, y, tri in reversed(self._blocks()):
            stop = start + y.shape[0]
            tail = xs[:, start:stop] if tail is None else torch.cat([xs[:, start:stop], tail], 1)
            r = torch.linalg.solve_triangular(tri.T, tail @ y.T, upper=False, left=False)
            tail = tail - r @ y
        return -tail

    def rotate_t(self, x: Tensor) -> Tensor:
        """Rows ``Qᵀ x`` for ``x`` of shape ``(N, n)``."""
        if not self._use_blocks(x.shape[0]):
            return x @ self.matrix()
        # x Q = −(x B_1 ⋯ B_L) D; x B_j = x − (x Y_jᵀ) S_j^{-1} Y_j touches the columns from
        # start_j on: after block j its first block of columns is final.
        done, tail = [], x
        for _, y, tri in self._blocks():
            r = torch.linalg.solve_triangular(tri, tail @ y.T, upper=True, left=False)
            tail = tail - r @ y
            done.append(tail[:, : y.shape[0]])
            tail = tail[:, y.shape[0]:]
        return -torch.cat(done, 1) * self.signs

    def _load_from_state_dict(self, state_dict: dict, prefix: str, local_metadata: dict,
                              *args: object) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)  # type: ignore[arg-type]
        # Version 1 (full vectors) is what torch records in a state dict of an older version; a
        # dict without metadata (rebuilt by hand) is taken as the current version.
        if (self.kind == "householder" and local_metadata.get("version", self._version) < 2
                and prefix + "weight" in state_dict):
            self._to_triangular()

    @torch.no_grad()
    def _to_triangular(self) -> None:
        """Full Householder vectors (older versions) → triangular ones with the same ``Q``."""
        p = self.weight.detach().to(torch.float64).cpu()
        q0 = torch.eye(self.n, dtype=torch.float64)
        for v in p:  # −H_1 ⋯ H_n with the full vectors
            q0 = q0 - 2 * torch.outer(q0 @ v, v) / v.dot(v)
        self.weight.copy_(_householder_vectors(-q0).to(self.weight))

    # ---------------------------------------------------------------- construction
    @torch.no_grad()
    def set_matrix(self, q: Tensor) -> None:
        """Set the parameters and the sign buffer so that :meth:`matrix` equals ``q``.

        ``q``: orthogonal ``(n, n)``, either determinant. ``ValueError`` when ``q`` is not
        orthogonal or this kind cannot represent it (Cayley, ``exp``: an eigenvalue ``−1``).
        """
        q = q.detach().to(torch.float64).cpu()
        eye = torch.eye(self.n, dtype=torch.float64)
        if q.shape != (self.n, self.n) or (q.T @ q - eye).abs().max() > _ORTHOGONAL_TOL:
            raise ValueError(f"Rotation.set_matrix: expected an orthogonal ({self.n}, {self.n}) "
                             f"matrix, got shape {tuple(q.shape)}")
        signs = torch.ones(self.n, dtype=torch.float64)
        signs[-1] = 1.0 if torch.linalg.det(q) > 0 else -1.0
        q0 = q * signs
        if self.kind == "householder":
            param = _householder_vectors(q0)
        elif self.kind == "cayley":
            if not torch.linalg.cond(eye + q0) < 1e10:
                raise ValueError("Rotation.set_matrix: the rotation has an eigenvalue −1, which "
                                 "the Cayley map cannot reach; use kind='householder'")
            a = torch.linalg.solve(eye + q0, eye - q0)
            param = 0.25 * (a - a.T)
        else:
            log = min(_eig_log(q0), _rotation_log(q0),
                      key=lambda lg: float((torch.matrix_exp(lg) - q0).abs().max()))
            if (torch.matrix_exp(log) - q0).abs().max() > _ORTHOGONAL_TOL:
                raise ValueError("Rotation.set_matrix: no real logarithm found (eigenvalue close to "
                                 "−1); use kind='householder'")
            param = 0.5 * log
        self.weight.copy_(param.to(self.weight))
        self.signs.copy_(signs.to(self.signs))


def _ut_triangle(y: Tensor) -> Tensor:
    """``S = ½ diag(Y Yᵀ) + strict_upper(Y Yᵀ)`` of the UT transform ``I − Yᵀ S^{-1} Y``."""
    gram = y @ y.T
    return torch.triu(gram, 1) + torch.diag_embed(0.5 * gram.diagonal())


def _householder_vectors(q0: Tensor) -> Tensor:
    """Rows ``v_i`` with ``−H_1 ⋯ H_n = q0`` (``q0 ∈ SO(n)``): Householder QR of ``−q0``, each
    column mapped onto ``+e_i`` (the parity of ``n`` reflections makes the last step close)."""
    n = q0.shape[0]
    current = -q0.clone()
    vectors = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        a = current[i:, i]
        rest = a[1:].square().sum()
        norm = torch.sqrt(a[0].square() + rest)
        v = torch.zeros(n, dtype=torch.float64)
        v[i + 1:] = a[1:]
        # v_i = a_i − ‖a‖ without cancellation (Parlett).
        v[i] = -rest / (a[0] + norm) if a[0] > 0 else a[0] - norm
        if float(v.norm()) == 0.0:  # already e_i: a reflector that fixes e_1, …, e_i
            v[n - 1] = 1.0
        v = v / v.norm()
        vectors[i] = v
        current = current - 2 * torch.outer(v, v @ current)
    return vectors


def _eig_log(q0: Tensor) -> Tensor:
    """``P diag(log λ) P⁻¹`` from the complex eigendecomposition: accurate angles, but not real
    when ``q0`` has the eigenvalue ``−1`` (then :func:`_rotation_log` is used)."""
    vals, vecs = torch.linalg.eig(q0)
    log = (vecs @ torch.diag_embed(torch.log(vals)) @ torch.linalg.inv(vecs)).real
    return 0.5 * (log - log.T)


def _rotation_log(q0: Tensor) -> Tensor:
    r"""A real skew ``L`` with ``exp(L) = q0`` for ``q0 ∈ SO(n)`` (float64).

    ``q0`` is normal, so ``M = ½(q0 + q0ᵀ)`` and ``K = ½(q0 − q0ᵀ)`` commute; on each invariant
    plane ``q0`` turns by ``θ`` with ``M = cos θ`` and ``K = sin θ·J``, so
    ``L = g(M) K`` with ``g(c) = arccos(c)/√(1 − c²)``. On the eigenspace ``q0 = −I`` (even
    dimension in ``SO(n)``, ``K = 0`` there) ``L`` turns by ``π`` in pairs of basis vectors.
    """
    m, k = 0.5 * (q0 + q0.T), 0.5 * (q0 - q0.T)
    cos, basis = torch.linalg.eigh(m)
    cos = cos.clamp(-1.0, 1.0)
    half_turn = cos < -1.0 + 1e-10
    one_minus = 1.0 - cos
    near_one = one_minus < 1e-8
    safe = torch.where(near_one | half_turn, torch.zeros_like(cos), cos)
    g = torch.where(near_one, 1.0 + one_minus / 3.0, torch.arccos(safe) / torch.sqrt(1.0 - safe**2))
    g = torch.where(half_turn, torch.zeros_like(g), g)
    log = (basis * g) @ basis.T @ k
    flipped = basis[:, half_turn]
    if flipped.shape[1] % 2:
        raise ValueError("Rotation.set_matrix: odd-dimensional −1 eigenspace (not a rotation)")
    for i in range(0, flipped.shape[1], 2):
        a, b = flipped[:, i], flipped[:, i + 1]
        log = log + torch.pi * (torch.outer(a, b) - torch.outer(b, a))
    return 0.5 * (log - log.T)
