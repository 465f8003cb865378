r"""The flowified linear layer (paper §3.1): ``W = U Σ Vᵀ`` in three regimes.

``U ∈ O(out)``, ``V ∈ O(in)`` (:class:`~survae_flowify.layers.rotations.Rotation`),
``Σ = diag(σ)``, ``σ = exp(log σ) > 0``, ``r = min(in, out)`` singular values, bias ``b``.

* ``in == out`` — :class:`Bijection`: ``z = U Σ Vᵀ x + b``, contribution ``Σ log σ``.
* ``in > out`` — :class:`InferenceSurjection` (exact): ``y = Vᵀx = (y_keep, y_drop)``,
  ``z = U Σ y_keep + b``, contribution ``Σ log σ + log p(y_drop | z)``. The inverse samples
  ``y_drop ~ p(· | z)`` and returns ``V (Σ⁻¹ Uᵀ(z − b), y_drop)``, so ``forward(inverse(z)) = z``.
* ``in < out`` — :class:`GenerativeSurjection` (bound): ``y = Σ Vᵀ x``, noise ``u ∈ R^{out−in}``
  from ``q`` (normal by default, appendix B; or uniform), ``z = U (y, u) + b``, contribution
  ``Σ log σ − log q(u)``. The inverse drops ``u``: ``x = V Σ⁻¹ [Uᵀ(z − b)]_{:in}``.

``Linear(in, out)`` returns the subclass for its regime, so ``isinstance`` tells the kind; all
share :class:`SvdLinear` (and, with the Gram layers, :class:`~survae_flowify.layers.linear_base.Linear`).
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
from survae_flowify.layers import (
    gram_linear,  # noqa: F401  (registers parametrization="gram")
    lu_linear,  # noqa: F401  (registers parametrization="lu")
)
from survae_flowify.layers.linear_base import IncreasingParts, Linear, ReducingParts, SquareParts, register
from survae_flowify.layers.rotations import Rotation

__all__ = ["IncreasingLinear", "Linear", "ReducingLinear", "SquareLinear", "SvdLinear"]

_MIN_SINGULAR_VALUE = 1e-12


class SvdLinear(Linear):
    """``W = U Σ Vᵀ`` with rotations ``U``, ``V`` and ``σ = exp(log σ)``; see the module docstring.

    In eval mode the dense matrices are computed once and reused while the parameters are
    unchanged (:mod:`survae_flowify._cache`). Low-level parts, for layers that apply the kernel
    to many patches (``Conv2d``): :meth:`forward_parts` and :meth:`inverse_parts`.
    """

    parametrization = "svd"

    def __init__(self, in_features: int, out_features: int, **options: object) -> None:
        super().__init__(in_features, out_features, **options)  # type: ignore[arg-type]
        self.U = Rotation(self.out_features, self.rotation_kind)  # type: ignore[arg-type]
        self.V = Rotation(self.in_features, self.rotation_kind)  # type: ignore[arg-type]
        self.log_sigma = nn.Parameter(torch.zeros(self.rank))
        self._register_bias()
        self._init_regime()

    def _init_regime(self) -> None:
        pass

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rotation={self.U.kind!r}")

    # ----------------------------------------------------------------- the dense equivalent
    @property
    def weight(self) -> Tensor:
        """The equivalent dense weight ``U[:, :r] Σ V[:, :r]ᵀ``, shape ``(out, in)``."""
        u, v = self.U.matrix(), self.V.matrix()
        r = self.rank
        return (u[:, :r] * torch.exp(self.log_sigma)) @ v[:, :r].T

    def _eval_mats(self, dtype: torch.dtype) -> tuple[Tensor, ...] | None:
        """Dense matrices for the eval fast path (cached), or ``None`` while training or when a
        gradient must reach the parameters: then the rotations are applied directly."""
        if self.training:
            return None
        inputs = (self.U.weight, self.U.signs, self.V.weight, self.V.signs, self.log_sigma)
        if gradient_needed(inputs):
            return None
        return self._derived("eval_mats", inputs, lambda: self._build_eval_mats(dtype),
                             extra=(dtype, self.U.kind, self.V.kind))

    def _build_eval_mats(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        raise NotImplementedError

    # ----------------------------------------------------------------- low-level parts
    def forward_parts(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        """``x (N, in) -> (z (N, out), dropped (N, in−out) | None, log_q (N,) | None, Σ log σ)``.

        ``dropped``: the dropped coordinates ``y_drop`` (reducing regime; no density evaluated).
        ``log_q``: the log-density of the noise this call sampled (increasing regime).
        """
        raise NotImplementedError

    def inverse_parts(self, z: Tensor, dropped: Tensor | None) -> Tensor:
        """``z (N, out)`` and, when reducing, ``dropped (N, in−out)`` ``-> x (N, in)``."""
        y = self.U.rotate_t(z - self._b(z))[:, : self.rank] * torch.exp(-self.log_sigma).to(z.dtype)
        if dropped is not None:
            y = torch.cat([y, dropped], dim=1)
        return self.V.rotate(y)

    def _log_det(self, x: Tensor) -> Tensor:
        return self.log_sigma.to(x.dtype).sum()

    # ----------------------------------------------------------------- construction
    def _fit(self, weight: Tensor) -> None:
        u, s, vh = torch.linalg.svd(weight, full_matrices=True)
        if s.min() <= _MIN_SINGULAR_VALUE * max(1.0, s.max().item()):
            raise ValueError(
                f"Linear.from_linear: the weight ({self.out_features}, {self.in_features}) is "
                f"rank-deficient (smallest singular value {s.min().item():.3g}); a flowified layer "
                "needs full rank"
            )
        with torch.no_grad():
            self.U.set_matrix(u)
            self.V.set_matrix(vh.T)
            self.log_sigma.copy_(torch.log(s).to(self.log_sigma))
            if not torch.allclose(self.weight.double(), weight, atol=1e-6 * max(1.0, s.max().item())):
                raise ValueError("Linear.from_linear: could not reproduce the weight")


@register("svd", "square")
class SquareLinear(SquareParts, SvdLinear, Bijection):
    """``in == out``: an invertible linear map, ``z = U Σ Vᵀ x + b``; contribution ``Σ log σ``."""

    def _build_eval_mats(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        return (self.weight.to(dtype),)

    def forward_parts(self, x: Tensor) -> tuple[Tensor, None, None, Tensor]:
        mats = self._eval_mats(x.dtype)
        if mats is not None:
            z = x @ mats[0].T
        else:
            z = self.U.rotate(self.V.rotate_t(x) * torch.exp(self.log_sigma).to(x.dtype))
        return z + self._b(x), None, None, self._log_det(x)


@register("svd", "reducing")
class ReducingLinear(ReducingParts, SvdLinear, InferenceSurjection):
    """``in > out``: exact, with a right inverse that samples the dropped coordinates."""

    def _build_eval_mats(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        v = self.V.matrix()
        return (torch.cat([self.weight, v[:, self.rank:].T], dim=0).to(dtype),)

    def forward_parts(self, x: Tensor) -> tuple[Tensor, Tensor, None, Tensor]:
        mats = self._eval_mats(x.dtype)
        if mats is not None:
            zy = x @ mats[0].T  # one product gives z − b and y_drop
            z, dropped = zy[:, : self.out_features], zy[:, self.out_features:]
        else:
            y = self.V.rotate_t(x)
            dropped = y[:, self.rank:]
            z = self.U.rotate(y[:, : self.rank] * torch.exp(self.log_sigma).to(x.dtype))
        return z + self._b(x), dropped, None, self._log_det(x)


@register("svd", "increasing")
class IncreasingLinear(IncreasingParts, SvdLinear, GenerativeSurjection):
    """``in < out``: a lower bound; noise fills the ``out − in`` new directions."""

    def _build_eval_mats(self, dtype: torch.dtype) -> tuple[Tensor, ...]:
        u = self.U.matrix()
        return (self.weight.to(dtype), u[:, self.rank:].to(dtype))

    def forward_parts(self, x: Tensor) -> tuple[Tensor, None, Tensor, Tensor]:
        n_noise = self.out_features - self.in_features
        u, log_q = self.noise.sample((x.shape[0], n_noise), x)
        mats = self._eval_mats(x.dtype)
        if mats is not None:
            z = x @ mats[0].T + u @ mats[1].T
        else:
            y = self.V.rotate_t(x) * torch.exp(self.log_sigma).to(x.dtype)
            z = self.U.rotate(torch.cat([y, u], dim=1))
        return z + self._b(x), None, log_q, self._log_det(x)
