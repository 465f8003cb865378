r"""The flowified Linear without rotations: a dense ``W`` (``parametrization="gram"``).

For standard-normal inverse densities and normal augmenting noise the likelihood of the SVD layer
``W = U Σ Vᵀ`` depends on ``U``, ``Σ``, ``V`` only through ``W``, so ``W`` can be a plain dense
parameter. Everything is computed from a thin QR factorisation of ``W`` (or ``Wᵀ``), which is
backward stable: forming the Gram matrix ``W Wᵀ`` and its Cholesky factor would square the
condition number and fail in float32 for nearly dependent rows. The cost per step is
``O(in·out·min(in, out))`` once plus ``O(N·in·out)`` per batch, instead of the ``O(N·n²)`` of
applying full rotations.

* reducing (``in > out``): ``Wᵀ = Q R`` (``Q`` of shape ``(in, out)``, orthonormal columns
  spanning the row space of ``W``); ``Σ log σ = Σ log |R_ii|`` and, with ``y = Vᵀx``,
  ``‖y_drop‖² = ‖x‖² − ‖Qᵀx‖²``, so ``V = Σ log |R_ii| − ½‖y_drop‖² − ½(in − out) log 2π`` — the
  SVD layer's value exactly. The inverse is ``x = Q R^{-T}(z − b) + (I − Q Qᵀ) ε``,
  ``ε ~ N(0, I)``: ``W⁺(z − b)`` plus a standard normal on the null space of ``W``.
  With ``inverse_density="conditional"`` the null-space component gets the basis-free
  :class:`~survae_flowify.distributions.nullspace.NullSpaceNormal` instead,
  ``N(P⊥ μ(z), σ(z)² I)`` with ``μ`` predicted in data space and
  ``‖P⊥(x − μ)‖² = ‖x − μ‖² − ‖Qᵀ(x − μ)‖²``: the paper's conditional models without rotations.
  It is isotropic in the null space (the SVD layer's conditional density is diagonal in the
  basis of ``V``), so the two parametrizations then define different models.
* square: ``V = log|det W|``; inverse by a linear solve.
* increasing (``in < out``): ``W = Q R`` (``Q`` of shape ``(out, in)``); noise ``g ~ N(0, s² I)``
  projected onto the orthogonal complement of the range of ``W``, ``w = (I − Q Qᵀ) g``,
  ``z = W x + w + b``; ``V = Σ log |R_ii| + ‖w‖²/(2s²) + (out − in)(log s + ½ log 2π)``.
  Inverse: ``x = R^{-1} Qᵀ (z − b)``.

The dropped coordinates and the noise have no basis here, so these layers are not
:class:`~survae_flowify.layers.linear.SvdLinear` and offer no ``forward_parts``/``inverse_parts``:
convolutions (``PatchLinear``) need the SVD parametrization.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify import _state
from survae_flowify.algebra.transform import (
    Bijection,
    GenerativeSurjection,
    InferenceSurjection,
    check_context,
)
from survae_flowify.distributions.nullspace import NullSpaceNormal
from survae_flowify.layers.linear_base import Linear, register

__all__ = ["GramIncreasingLinear", "GramLinear", "GramReducingLinear", "GramSquareLinear"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class GramLinear(Linear):
    """Shared state of the Gram-parametrised regimes: a dense weight and bias."""

    parametrization = "gram"

    def __init__(self, in_features: int, out_features: int, **options: object) -> None:
        options = {"parametrization": "gram", **options}
        super().__init__(in_features, out_features, **options)  # type: ignore[arg-type]
        if self.inverse_density_kind == "diagonal" or self.noise_kind != "normal":
            raise ValueError(
                "Linear(parametrization='gram') supports inverse_density='normal' or "
                f"'conditional' and noise='normal' (got {self.inverse_density_kind!r}, "
                f"{self.noise_kind!r}); use the SVD parametrization for a learned diagonal density "
                "and uniform noise"
            )
        w = torch.empty(self.out_features, self.in_features)
        nn.init.orthogonal_(w)  # singular values 1, as the SVD layer starts
        self.weight_param = nn.Parameter(w)
        self._register_bias()
        self.noise_log_scale = (nn.Parameter(torch.zeros(())) if self.in_features < self.out_features
                                else None)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                "parametrization='gram'")

    @property
    def weight(self) -> Tensor:
        return self.weight_param

    def _w(self, like: Tensor) -> Tensor:
        return self.weight_param.to(like.dtype)

    def _fit(self, weight: Tensor) -> None:
        s = torch.linalg.svdvals(weight)
        if s.min() <= 1e-12 * max(1.0, s.max().item()):
            raise ValueError(
                f"Linear.from_linear: the weight ({self.out_features}, {self.in_features}) is "
                f"rank-deficient (smallest singular value {s.min().item():.3g}); a flowified layer "
                "needs full rank"
            )
        with torch.no_grad():
            self.weight_param.copy_(weight.to(self.weight_param))

    def _factor(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Thin QR ``(Q, R)`` of ``Wᵀ`` (reducing) or ``W`` (increasing), cached in eval mode."""
        def build() -> tuple[Tensor, Tensor]:
            w = self.weight_param.to(dtype)
            return torch.linalg.qr(w.T if self.in_features > self.out_features else w)
        return self._derived("qr", (self.weight_param,), build, extra=dtype)

    def _rank_deficient(self, r: Tensor) -> bool:
        """Numerically rank-deficient ``R``: ``min |R_ii| ≤ ε · max(in, out) · max |R_ii|`` (the
        rule of ``numpy.linalg.matrix_rank``). Rows that are equal in exact arithmetic leave a
        ``|R_ii|`` of rounding size, not zero."""
        d = r.diagonal().abs()
        tol = torch.finfo(r.dtype).eps * max(self.in_features, self.out_features)
        return not bool(d.min() > tol * d.max())

    def _singular(self, what: str) -> ValueError:
        return ValueError(f"{type(self).__name__}: the weight is singular (rank below "
                          f"{self.rank}), so {what} is undefined")


@register("gram", "square")
class GramSquareLinear(GramLinear, Bijection):
    """``z = W x + b``, contribution ``log|det W|``."""

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self._w(x)
        return x @ w.T + self._b(x), torch.linalg.slogdet(w)[1].expand(x.shape[0])

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        try:
            return torch.linalg.solve(self._w(z), (z - self._b(z)).T).T
        except torch.linalg.LinAlgError:
            raise self._singular("the inverse") from None


@register("gram", "reducing")
class GramReducingLinear(GramLinear, InferenceSurjection):
    """``z = W x + b`` with a density on the null space of ``W`` (exact): standard normal, or
    with ``inverse_density="conditional"`` the :class:`NullSpaceNormal` ``N(P⊥ μ(z), σ(z)² I)``."""

    def __init__(self, in_features: int, out_features: int, **options: object) -> None:
        super().__init__(in_features, out_features, **options)
        self.null_density = (
            NullSpaceNormal(self.in_features, self.out_features, hidden=self.hidden,
                            context_features=self.context_features)
            if self.inverse_density_kind == "conditional" else None)

    def _mats(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``([W; Qᵀ], Σ log|R_ii|)``: one product gives ``W x`` and ``Qᵀ x``; cached in eval."""
        def build() -> tuple[Tensor, Tensor]:
            q, r = self._factor(dtype)
            return torch.cat([self.weight_param.to(dtype), q.T], 0), r.diagonal().abs().log().sum()
        return self._derived("mats", (self.weight_param,), build, extra=dtype)

    def _forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_context(self, context, self.context_features, x.shape[0])
        stacked, log_det = self._mats(x.dtype)
        if self.null_density is not None:
            # z first (μ depends on it), then Qᵀ(x − μ): two products of the size of W's.
            z = x @ stacked[: self.out_features].T + self._b(x)
            q = stacked[self.out_features:].T
            return z, log_det + self.null_density.log_prob(x, q, z, context)
        both = x @ stacked.T
        z, xq = both[:, : self.out_features] + self._b(x), both[:, self.out_features:]
        drop_sq = (x.square().sum(1) - xq.square().sum(1)).clamp_min(0)
        m = self.in_features - self.out_features
        return z, log_det - 0.5 * drop_sq - m * _HALF_LOG_2PI

    def _inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool) -> Tensor:
        check_context(self, context, self.context_features, z.shape[0])
        q, r = self._factor(z.dtype)
        if self._rank_deficient(r):
            raise self._singular("the right inverse")
        x = torch.linalg.solve_triangular(r, z - self._b(z), upper=True, left=False) @ q.T  # W⁺(z − b)
        if self.null_density is not None:
            return x + self.null_density.draw(q, z, context, mean=mean)
        if mean:
            return x
        eps = torch.randn(z.shape[0], self.in_features, dtype=z.dtype, device=z.device)
        return x + eps - (eps @ q) @ q.T


@register("gram", "increasing")
class GramIncreasingLinear(GramLinear, GenerativeSurjection):
    """``z = W x + w + b`` with normal noise ``w`` orthogonal to the range of ``W`` (bound)."""

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        q, r = self._factor(x.dtype)
        log_det = r.diagonal().abs().log().sum()
        z = x @ self._w(x).T + self._b(x)
        if not _state.noise_enabled():
            return z, log_det.expand(x.shape[0])
        log_s = self.noise_log_scale.to(x.dtype)
        g = torch.randn(x.shape[0], self.out_features, dtype=x.dtype, device=x.device) * log_s.exp()
        noise = g - (g @ q) @ q.T
        m = self.out_features - self.in_features
        log_q = -0.5 * noise.square().sum(1) * torch.exp(-2 * log_s) - m * (log_s + _HALF_LOG_2PI)
        return z + noise, log_det - log_q

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        q, r = self._factor(z.dtype)
        if self._rank_deficient(r):
            raise self._singular("the left inverse")
        y = (z - self._b(z)) @ q  # Qᵀ(z − b), rows
        return torch.linalg.solve_triangular(r, y.T, upper=True).T
