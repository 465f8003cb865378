r"""The flowified Linear without rotations and with an exact density: ``parametrization="lu"``.

With ``n = in``, ``m = out``, ``r = min(n, m)`` and ``d = |n − m|``, the layer keeps an invertible
``T = L U`` (``r × r``; ``L`` unit lower triangular, ``U`` upper triangular with diagonal
``signs ⊙ exp(s)``, ``signs`` a fixed ``±1`` buffer) and two dense couplings ``B`` (``r × d``) and
``C`` (``d × r``). ``P`` is a fixed permutation (a buffer, the identity unless
:meth:`~survae_flowify.layers.linear_base.Linear.from_linear` needs another) of the inputs
(square, reducing) or of the outputs (increasing). Nothing is orthogonal, so no rotation is ever
applied: a step costs ``O(N n m)`` products like the plain layer, with ``O(r³)`` to form ``T``
once when the batch pays for it.

* reducing (``n > m``): ``(x₁, x₂) = Pᵀx`` (``x₁`` the first ``m``), the dropped coordinates
  ``y = x₂ + C x₁ ∈ R^{n−m}`` and ``z = T x₁ + B y + b``. The Jacobian of ``x ↦ (z, y)`` is
  ``[[T + BC, B], [C, I]] Pᵀ``, of determinant ``± det T``, so the contribution is
  ``Σ s + log p(y | z)`` with the inverse densities of the SVD layer (``"normal"``,
  ``"diagonal"``, ``"conditional"``, ``context_features``): exact. Inverse: ``y ~ p(· | z)`` (or
  its mean), ``x₁ = T⁻¹(z − b − B y)`` (two triangular solves), ``x₂ = y − C x₁``.
  Dense weight ``[T + BC, B] Pᵀ``.
* square: ``z = T Pᵀx + b``, contribution ``Σ s``; inverse ``x = P T⁻¹(z − b)``.
* increasing (``n < m``): noise ``u ~ q`` in ``R^{m−n}`` (normal or uniform, learned scale),
  ``w = u + C x``, ``z = P (T x + B w, w) + b``; the Jacobian of ``(x, u) ↦ z`` is
  ``P [[T + BC, B], [C, I]]``, so the contribution is ``Σ s − log q(u)`` (a bound). Inverse drops
  the noise: with ``(z₁, z₂) = Pᵀ(z − b)``, ``x = T⁻¹(z₁ − B z₂)``. Dense weight
  ``P [[T + BC], [C]]``.

At initialisation ``L = I``, ``s = 0``, the strict upper triangle, ``B`` and ``C`` are zero:
``W = [I 0]`` (or its transpose), as the SVD layer starts. ``L``, ``s`` and the strict upper
triangle of ``U`` are stored packed in one ``r × r`` parameter (LAPACK's layout), so the
parameter count is the number of free values, ``r² + 2rd``.

Unlike the SVD layer the coordinates that are dropped or filled with noise are not orthogonal
to the kept ones, so for the same ``W`` the two parametrizations define different models (the
same likelihood family, reached by other parameters).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from survae_flowify._cache import gradient_needed
from survae_flowify.algebra.transform import (
    Bijection,
    GenerativeSurjection,
    InferenceSurjection,
)
from survae_flowify.layers.linear_base import IncreasingParts, Linear, ReducingParts, SquareParts, register

__all__ = ["LuIncreasingLinear", "LuLinear", "LuReducingLinear", "LuSquareLinear"]

_MIN_SINGULAR_VALUE = 1e-12


class _Unpack(torch.autograd.Function):
    """``(p ⊙ M_L, p ⊙ M_U, diag p)`` from the packed ``(r, r)`` parameter and the two strict
    triangle masks. The masks and the diagonal are disjoint, so the backward writes one ``r × r``
    gradient in place; autograd, from the three separate operations, made an ``r × r`` zero
    tensor for the diagonal's gradient and added the three (0.9 ms of an FMLP-MNIST step)."""

    @staticmethod
    def forward(ctx, p: Tensor, lower_mask: Tensor, upper_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(lower_mask, upper_mask)
        return p * lower_mask, p * upper_mask, p.diagonal().clone()

    @staticmethod
    def backward(ctx, g_lower: Tensor | None, g_upper: Tensor | None,
                 g_diagonal: Tensor | None) -> tuple[Tensor | None, None, None]:
        lower_mask, upper_mask = ctx.saved_tensors
        grad = None if g_lower is None else g_lower * lower_mask
        if g_upper is not None:
            grad = g_upper * upper_mask if grad is None else grad.addcmul_(g_upper, upper_mask)
        if g_diagonal is not None:
            if grad is None:
                grad = torch.diag(g_diagonal)
            else:
                grad.diagonal().add_(g_diagonal)
        return grad, None, None


class LuLinear(Linear):
    """Shared state of the LU-parametrised regimes: packed ``T = L U``, couplings ``B``, ``C``,
    ``signs``, ``perm``; see the module docstring.

    In eval mode without a gradient the dense matrices are built once and reused while the
    parameters are unchanged (:mod:`survae_flowify._cache`): eval is one product, as for
    ``nn.Linear``. :meth:`forward_parts`/:meth:`inverse_parts` serve ``PatchLinear``.
    """

    parametrization = "lu"

    def __init__(self, in_features: int, out_features: int, **options: object) -> None:
        options = {"parametrization": "lu", **options}
        super().__init__(in_features, out_features, **options)  # type: ignore[arg-type]
        r, d = self.rank, abs(self.in_features - self.out_features)
        # Strictly below the diagonal: L; on it: s = log|U_ii|; strictly above: U.
        self.lu = nn.Parameter(torch.zeros(r, r))
        self.B = nn.Parameter(torch.zeros(r, d)) if d else None
        self.C = nn.Parameter(torch.zeros(d, r)) if d else None
        self._register_bias()
        self.register_buffer("signs", torch.ones(r))
        permuted = self.out_features if self.in_features < self.out_features else self.in_features
        self.register_buffer("perm", torch.arange(permuted))
        # Masking by a product is 2.5× faster than torch.tril/triu on one CPU thread (r = 512:
        # 58 against 151 µs, and so in the backward); derived from r alone, so not saved.
        self.register_buffer("lower_mask", torch.ones(r, r).tril(-1), persistent=False)
        self.register_buffer("upper_mask", torch.ones(r, r).triu(1), persistent=False)
        self._init_regime()

    def _init_regime(self) -> None:
        pass

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                "parametrization='lu'")

    # ----------------------------------------------------------------- the factors
    def _strict(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(L − I, U − diag u, u, s)``: the strict triangles, ``U``'s diagonal
        ``u_i = signs_i·exp(s_i)`` and ``s``, unpacked from the one parameter (:class:`_Unpack`)."""
        lower, upper, s = _Unpack.apply(self.lu.to(dtype), self.lower_mask.to(dtype),
                                        self.upper_mask.to(dtype))
        return lower, upper, self.signs.to(dtype) * torch.exp(s), s

    def _factors(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """``(L, U, s)``, the factors ``(r, r)`` formed out of place (a diagonal written in place
        into a product made autograd copy and refill the whole ``r × r`` gradient)."""
        lower, upper, diagonal, s = self._strict(dtype)
        eye = torch.eye(self.rank, dtype=dtype, device=lower.device)
        return lower + eye, upper + torch.diag(diagonal), s

    def _t_matrix(self, dtype: torch.dtype) -> Tensor:
        lower, upper, _ = self._factors(dtype)
        return lower @ upper

    def _apply_t(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        """``(x₁ Tᵀ, log |det T| = Σ s)`` for rows ``x₁`` ``(N, r)``. Forming ``T`` costs ``r³``
        (and ``2r³`` in the backward) against ``N r²`` per triangular factor, so it pays when
        ``r < N``; otherwise ``x₁ Uᵀ = x₁ (U − diag u)ᵀ + x₁ ⊙ u`` and ``v Lᵀ = v + v (L − I)ᵀ``,
        so neither factor is formed."""
        if self.rank < x1.shape[0]:
            lower, upper, s = self._factors(x1.dtype)
            return x1 @ (lower @ upper).T, s.sum()
        lower, upper, diagonal, s = self._strict(x1.dtype)
        v = torch.addcmul(x1 @ upper.T, x1, diagonal)
        return torch.addmm(v, v, lower.T), s.sum()

    def _solve_t(self, v: Tensor) -> Tensor:
        """Rows ``x₁`` with ``x₁ Tᵀ = v``: ``Tᵀ = Uᵀ Lᵀ``, two triangular solves from the right."""
        lower, upper, _ = self._factors(v.dtype)
        w = torch.linalg.solve_triangular(lower.T, v, upper=True, left=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper.T, w, upper=False, left=False)

    def _log_det(self, x: Tensor) -> Tensor:
        return self.lu.diagonal().to(x.dtype).sum()

    def _inverse_perm(self) -> Tensor:
        return torch.argsort(self.perm)

    def _inner_weight(self) -> Tensor:
        """The dense weight before the permutation: ``[T + BC, B]``, ``T`` or ``[[T + BC], [C]]``."""
        t = self._t_matrix(self.lu.dtype)
        if self.B is None:
            return t
        t = t + self.B @ self.C
        if self.in_features > self.out_features:
            return torch.cat([t, self.B], dim=1)
        return torch.cat([t, self.C], dim=0)

    @property
    def weight(self) -> Tensor:
        """The equivalent dense weight, shape ``(out, in)`` (module docstring)."""
        inner = self._inner_weight()
        dim = 0 if self.in_features < self.out_features else 1
        return inner.index_select(dim, self._inverse_perm())

    # ----------------------------------------------------------------- eval cache
    def _eval_mats(self, dtype: torch.dtype) -> tuple[Tensor, ...] | None:
        """Dense matrices for the eval fast path (cached), or ``None`` while training or when a
        gradient must reach the parameters."""
        if self.training:
            return None
        inputs = tuple(t for t in (self.lu, self.B, self.C, self.signs, self.perm) if t is not None)
        if gradient_needed(inputs):
            return None
        return self._derived("eval_mats", inputs, lambda: self._build_eval_mats(dtype), extra=dtype)

    def _build_eval_mats(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        raise NotImplementedError

    # ----------------------------------------------------------------- low-level parts
    def forward_parts(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        """``x (N, in) -> (z (N, out), dropped (N, in−out) | None, log_q (N,) | None, Σ s)``.

        ``dropped``: ``y`` (reducing regime; no density evaluated). ``log_q``: the log-density of
        the noise this call sampled (increasing regime).
        """
        raise NotImplementedError

    def inverse_parts(self, z: Tensor, dropped: Tensor | None) -> Tensor:
        """``z (N, out)`` and, when reducing, ``dropped`` ``y (N, in−out)`` ``-> x (N, in)``."""
        raise NotImplementedError

    # ----------------------------------------------------------------- construction
    def _fit(self, weight: Tensor) -> None:
        s = torch.linalg.svdvals(weight)
        if s.min() <= _MIN_SINGULAR_VALUE * max(1.0, s.max().item()):
            raise ValueError(
                f"Linear.from_linear: the weight ({self.out_features}, {self.in_features}) is "
                f"rank-deficient (smallest singular value {s.min().item():.3g}); a flowified layer "
                "needs full rank"
            )
        with torch.no_grad():
            self._fit_factors(weight)
            if not torch.allclose(self.weight.double(), weight, atol=1e-6 * max(1.0, s.max().item())):
                raise ValueError("Linear.from_linear: could not reproduce the weight")

    def _set_factors(self, lower: Tensor, diag: Tensor, upper: Tensor) -> None:
        """Pack a unit lower ``L``, the diagonal of ``U`` and ``U`` into the parameters."""
        packed = torch.tril(lower, -1) + torch.triu(upper, 1) + torch.diag(diag.abs().log())
        self.lu.copy_(packed.to(self.lu))
        self.signs.copy_(torch.sign(diag).to(self.signs))

    def _fit_factors(self, weight: Tensor) -> None:
        # Partial pivoting of Wᵀ chooses the inputs of the leading block: Wᵀ = P L' U', so
        # W P = U'ᵀ L'ᵀ, whose leading block U'ᵀ L₁'ᵀ = (U'ᵀ D⁻¹)(D L₁'ᵀ) with D = diag U'.
        p, l_t, u_t = torch.linalg.lu(weight.T)
        r = self.rank
        diag = u_t.diagonal()
        self._set_factors(u_t.T / diag, diag, diag[:, None] * l_t[:r].T)
        self.perm.copy_(p.argmax(0))
        if self.B is not None:
            self.B.copy_((u_t.T @ l_t[r:].T).to(self.B))
            self.C.zero_()


@register("lu", "square")
class LuSquareLinear(SquareParts, LuLinear, Bijection):
    """``in == out``: ``z = T Pᵀx + b``, contribution ``Σ s``."""

    def _build_eval_mats(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        return (self.weight.to(dtype),)

    def forward_parts(self, x: Tensor) -> tuple[Tensor, None, None, Tensor]:
        mats = self._eval_mats(x.dtype)
        if mats is not None:
            z, log_det = x @ mats[0].T, self._log_det(x)
        else:
            z, log_det = self._apply_t(x.index_select(1, self.perm))
        return z + self._b(x), None, None, log_det

    def inverse_parts(self, z: Tensor, dropped: Tensor | None) -> Tensor:
        return self._solve_t(z - self._b(z)).index_select(1, self._inverse_perm())


@register("lu", "reducing")
class LuReducingLinear(ReducingParts, LuLinear, InferenceSurjection):
    """``in > out``: ``y = x₂ + C x₁`` dropped, ``z = T x₁ + B y + b``; exact, with a right
    inverse that samples ``y ~ p(· | z)``."""

    def _build_eval_mats(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        # One (in × in) matrix gives z − b and y: [[T + BC, B], [C, I]] Pᵀ.
        drop = self.in_features - self.out_features
        c_full = torch.cat([self.C, torch.eye(drop, dtype=self.C.dtype, device=self.C.device)], 1)
        inner = torch.cat([self._inner_weight(), c_full], 0)
        return (inner.index_select(1, self._inverse_perm()).to(dtype),)

    def forward_parts(self, x: Tensor) -> tuple[Tensor, Tensor, None, Tensor]:
        m = self.out_features
        mats = self._eval_mats(x.dtype)
        if mats is not None:
            zy = x @ mats[0].T
            z, dropped, log_det = zy[:, :m], zy[:, m:], self._log_det(x)
        else:
            xp = x.index_select(1, self.perm)
            x1, x2 = xp[:, :m], xp[:, m:]
            dropped = torch.addmm(x2, x1, self.C.to(x.dtype).T)
            t_x1, log_det = self._apply_t(x1)
            z = torch.addmm(t_x1, dropped, self.B.to(x.dtype).T)
        return z + self._b(x), dropped, None, log_det

    def inverse_parts(self, z: Tensor, dropped: Tensor | None) -> Tensor:
        if dropped is None:
            raise ValueError(f"{type(self).__name__}.inverse_parts: the dropped coordinates are "
                             f"needed, shape (batch, {self.in_features - self.out_features}); got None")
        v = z - self._b(z) - dropped @ self.B.to(z.dtype).T
        x1 = self._solve_t(v)
        x2 = dropped - x1 @ self.C.to(z.dtype).T
        return torch.cat([x1, x2], 1).index_select(1, self._inverse_perm())


@register("lu", "increasing")
class LuIncreasingLinear(IncreasingParts, LuLinear, GenerativeSurjection):
    """``in < out``: ``w = u + C x``, ``z = P (T x + B w, w) + b``; a lower bound."""

    def _build_eval_mats(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        # z = W x + G u + b with G = P [[B], [I]].
        extra = self.out_features - self.in_features
        g = torch.cat([self.B, torch.eye(extra, dtype=self.B.dtype, device=self.B.device)], 0)
        return self.weight.to(dtype), g.index_select(0, self._inverse_perm()).to(dtype)

    def forward_parts(self, x: Tensor) -> tuple[Tensor, None, Tensor, Tensor]:
        u, log_q = self.noise.sample((x.shape[0], self.out_features - self.in_features), x)
        mats = self._eval_mats(x.dtype)
        if mats is not None:
            z, log_det = x @ mats[0].T + u @ mats[1].T, self._log_det(x)
        else:
            w = torch.addmm(u, x, self.C.to(x.dtype).T)
            t_x, log_det = self._apply_t(x)
            z1 = torch.addmm(t_x, w, self.B.to(x.dtype).T)
            z = torch.cat([z1, w], 1).index_select(1, self._inverse_perm())
        return z + self._b(x), None, log_q, log_det

    def inverse_parts(self, z: Tensor, dropped: Tensor | None) -> Tensor:
        zi = (z - self._b(z)).index_select(1, self.perm)
        z1, z2 = zi[:, : self.in_features], zi[:, self.in_features:]
        return self._solve_t(z1 - z2 @ self.B.to(z.dtype).T)

    def _fit_factors(self, weight: Tensor) -> None:
        # Partial pivoting of W chooses the outputs of the leading block: W = P L' U' with
        # T = L₁' U' directly and C = L₂' U' (B = 0).
        p, lower, upper = torch.linalg.lu(weight)
        r = self.rank
        self._set_factors(lower[:r], upper.diagonal(), upper)
        self.perm.copy_(p.argmax(0))
        self.B.zero_()
        self.C.copy_((lower[r:] @ upper).to(self.C))
