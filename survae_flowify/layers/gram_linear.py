r"""The flowified Linear without rotations: a dense ``W`` and its Gram matrix (``parametrization="gram"``).

For standard-normal inverse densities and normal augmenting noise the likelihood of the SVD layer
``W = U Σ Vᵀ`` depends on ``U``, ``Σ``, ``V`` only through ``W``, so ``W`` can be a plain dense
parameter and the contribution is computed from the Cholesky factor ``L`` of its Gram matrix.
The cost per step is ``O(in·out·min(in, out))`` once plus ``O(N·in·out)`` per batch, instead of the
``O(N·n²)`` of applying full rotations.

* reducing (``in > out``): ``G = W Wᵀ = L Lᵀ``; ``Σ log σ = Σ log L_ii`` and, with ``y = Vᵀx``,
  ``‖y_drop‖² = ‖x‖² − ‖y_keep‖² = ‖x‖² − ‖L⁻¹ W x‖²`` (``y_keep = Σ⁻¹Uᵀ W x``), so
  ``V = Σ log L_ii − ½‖y_drop‖² − ½(in − out) log 2π`` — the SVD layer's value exactly. The inverse is
  ``x = W⁺(z − b) + (I − W⁺W) ε``, ``ε ~ N(0, I)``: a standard normal on the null space of ``W``.
* square: ``V = log|det W|``; inverse by a linear solve.
* increasing (``in < out``): ``G = WᵀW``; noise ``g ~ N(0, s² I)`` projected onto the orthogonal
  complement of the range of ``W``, ``w = (I − W G⁻¹ Wᵀ) g``, ``z = W x + w + b``;
  ``V = Σ log L_ii + ‖w‖²/(2s²) + (out − in)(log s + ½ log 2π)``. Inverse: ``x = G⁻¹Wᵀ(z − b)``.

The dropped coordinates have no basis here, so :meth:`forward_parts` (used by ``PatchLinear``)
is not available; use the SVD parametrization inside convolutions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify import _state
from survae_flowify.algebra.transform import Bijection, GenerativeSurjection, InferenceSurjection
from survae_flowify.layers.linear import Linear

__all__ = ["GramIncreasingLinear", "GramLinear", "GramReducingLinear", "GramSquareLinear"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class GramLinear(Linear):
    """Shared state of the Gram-parametrised regimes: a dense weight and bias."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 inverse_density: str = "normal", noise: str = "normal", **_: object) -> None:
        nn.Module.__init__(self)
        if inverse_density != "normal" or noise != "normal":
            raise ValueError(
                "Linear(parametrization='gram') supports inverse_density='normal' and "
                f"noise='normal' only (got {inverse_density!r}, {noise!r}); use the SVD "
                "parametrization for learned or conditional densities and uniform noise"
            )
        self.in_features, self.out_features = in_features, out_features
        self.rank = min(in_features, out_features)
        w = torch.empty(out_features, in_features)
        nn.init.orthogonal_(w)  # singular values 1, as the SVD layer starts
        self.weight_param = nn.Parameter(w)
        self.bias_param = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.noise_log_scale = nn.Parameter(torch.zeros(())) if in_features < out_features else None
        self._cache = None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                "parametrization='gram'")

    @property
    def weight(self) -> Tensor:
        return self.weight_param

    def _w(self, like: Tensor) -> Tensor:
        return self.weight_param.to(like.dtype)

    def forward_parts(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        raise ValueError(
            "Linear(parametrization='gram') has no basis for dropped coordinates or noise, so "
            "forward_parts is unavailable; use parametrization='svd' (e.g. inside Conv2d)"
        )

    @classmethod
    def _copy_from(cls, layer: GramLinear, linear: nn.Linear) -> GramLinear:
        with torch.no_grad():
            layer.weight_param.copy_(linear.weight.detach().to(layer.weight_param))
            if linear.bias is not None:
                layer.bias_param.copy_(linear.bias.detach().to(layer.bias_param))
        return layer


class GramSquareLinear(GramLinear, Bijection):
    """``z = W x + b``, contribution ``log|det W|``."""

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self._w(x)
        return x @ w.T + self._b(x), torch.linalg.slogdet(w)[1].expand(x.shape[0])

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return torch.linalg.solve(self._w(z), (z - self._b(z)).T).T


class GramReducingLinear(GramLinear, InferenceSurjection):
    """``z = W x + b`` with a standard-normal density on the null space of ``W`` (exact)."""

    def _build_eval_mats(self) -> tuple[Tensor, ...]:
        w = self.weight_param.detach()
        chol = torch.linalg.cholesky(w @ w.T)
        whitened = torch.linalg.solve_triangular(chol, w, upper=False)  # L⁻¹W
        return torch.cat([w, whitened], 0), torch.log(chol.diagonal()).sum()

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mats = self._eval_mats(x.dtype)
        if mats is not None:  # eval: one product gives W x and L⁻¹W x
            both = x @ mats[0].T
            wx, keep_sq = both[:, : self.out_features], both[:, self.out_features:].square().sum(1)
            log_det = mats[1]
        else:
            w = self._w(x)
            chol = torch.linalg.cholesky(w @ w.T)
            wx = x @ w.T
            keep = torch.linalg.solve_triangular(chol, wx.T, upper=False)  # (out, N): ‖y_keep‖
            keep_sq = keep.square().sum(0)
            log_det = torch.log(chol.diagonal()).sum()
        drop_sq = (x.square().sum(1) - keep_sq).clamp_min(0)
        m = self.in_features - self.out_features
        return wx + self._b(x), log_det - 0.5 * drop_sq - m * _HALF_LOG_2PI

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        w = self._w(z)
        chol = torch.linalg.cholesky(w @ w.T)
        x = torch.cholesky_solve((z - self._b(z)).T, chol).T @ w  # W⁺(z − b)
        if mean:
            return x
        eps = torch.randn(z.shape[0], self.in_features, dtype=z.dtype, device=z.device)
        return x + eps - torch.cholesky_solve((eps @ w.T).T, chol).T @ w


class GramIncreasingLinear(GramLinear, GenerativeSurjection):
    """``z = W x + w + b`` with normal noise ``w`` orthogonal to the range of ``W`` (bound)."""

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self._w(x)
        chol = torch.linalg.cholesky(w.T @ w)
        log_det = torch.log(chol.diagonal()).sum()
        z = x @ w.T + self._b(x)
        if not _state.noise_enabled():
            return z, log_det.expand(x.shape[0])
        log_s = self.noise_log_scale.to(x.dtype)
        g = torch.randn(x.shape[0], self.out_features, dtype=x.dtype, device=x.device) * log_s.exp()
        noise = g - torch.cholesky_solve((g @ w).T, chol).T @ w.T
        m = self.out_features - self.in_features
        log_q = -0.5 * noise.square().sum(1) * torch.exp(-2 * log_s) - m * (log_s + _HALF_LOG_2PI)
        return z + noise, log_det - log_q

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        w = self._w(z)
        chol = torch.linalg.cholesky(w.T @ w)
        return torch.cholesky_solve(((z - self._b(z)) @ w).T, chol).T
