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

``Linear(in, out)`` returns the subclass for its regime, so ``isinstance`` tells the kind.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from survae_flowify.algebra.transform import (
    Bijection,
    GenerativeSurjection,
    InferenceSurjection,
    Shape,
    Transform,
)
from survae_flowify.distributions.conditional import InverseDensityKind, make_inverse_density
from survae_flowify.distributions.noise import Noise, NoiseKind
from survae_flowify.layers._cache import EvalCache
from survae_flowify.layers.rotations import Rotation, RotationKind, _compiling

__all__ = ["IncreasingLinear", "Linear", "ReducingLinear", "SquareLinear"]

_MIN_SINGULAR_VALUE = 1e-12


def _features(args: tuple, kwargs: dict) -> tuple[int, int]:
    names = ("in_features", "out_features")
    values = list(args[:2]) + [kwargs[n] for n in names[len(args[:2]):] if n in kwargs]
    if len(values) != 2 or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"Linear: in_features and out_features must be positive ints, got {values}")
    return values[0], values[1]


class Linear(EvalCache, Transform):
    """Flowified ``nn.Linear(in_features, out_features)``; see the module docstring for the math.

    Args:
        in_features, out_features: sizes; input ``(B, in_features)``, output ``(B, out_features)``.
        bias: learn ``b`` (else ``b = 0``).
        inverse_density: for ``in > out``, the density of the dropped coordinates: ``"normal"``,
            ``"diagonal"`` (learned) or ``"conditional"`` (mean and scale predicted from ``z``).
        noise: for ``in < out``, the augmenting noise: ``"normal"`` or ``"uniform"``, learned scale.
        rotation: parametrisation of ``U`` and ``V``: ``"householder"`` (fast default),
            ``"cayley"`` or ``"exp"`` (the paper's Lie-algebra map, appendix G).
        parametrization: ``"svd"`` (default) or ``"gram"``: no rotations at all, a dense ``W``
            whose Gram matrix gives the same likelihood when the inverse density and the noise
            are standard normal (:mod:`survae_flowify.layers.gram_linear`); fastest for wide layers.

    ``layer.weight`` (``(out, in)``) and ``layer.bias`` are the equivalent dense layer: under
    :func:`survae_flowify.noise_off` the forward output is ``F.linear(x, weight, bias)``. In eval
    mode the dense matrices are computed once and reused until a parameter changes.

    Low-level parts, for layers that apply the kernel to many patches (``Conv2d``):
    :meth:`forward_parts` and :meth:`inverse_parts`.
    """

    def __new__(cls, *args: object, **kwargs: object) -> Linear:
        if cls is Linear:
            fin, fout = _features(args, kwargs)
            parametrization = kwargs.get("parametrization", "svd")
            if parametrization == "gram":
                from survae_flowify.layers import gram_linear as g

                cls = (g.GramSquareLinear if fin == fout else g.GramReducingLinear if fin > fout
                       else g.GramIncreasingLinear)
            elif parametrization == "svd":
                cls = SquareLinear if fin == fout else ReducingLinear if fin > fout else IncreasingLinear
            else:
                raise ValueError(f"Linear: parametrization must be 'svd' or 'gram', got {parametrization!r}")
        return super().__new__(cls)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        inverse_density: InverseDensityKind = "normal",
        noise: NoiseKind = "normal",
        rotation: RotationKind = "householder",
        parametrization: Literal["svd", "gram"] = "svd",
    ) -> None:
        super().__init__()
        _features((in_features, out_features), {})
        self.in_features, self.out_features = in_features, out_features
        self.rank = min(in_features, out_features)
        self.U = Rotation(out_features, rotation)
        self.V = Rotation(in_features, rotation)
        self.log_sigma = nn.Parameter(torch.zeros(self.rank))
        self.bias_param = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._init_regime(inverse_density=inverse_density, noise=noise)
        self._cache: tuple[tuple, tuple[Tensor, ...]] | None = None

    def _init_regime(self, *, inverse_density: str, noise: str) -> None:
        pass

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rotation={self.U.kind!r}")

    @property
    def in_shape(self) -> Shape:
        return (self.in_features,)

    @property
    def out_shape(self) -> Shape:
        return (self.out_features,)

    # ----------------------------------------------------------------- the dense equivalent
    def _dense(self) -> tuple[Tensor, Tensor]:
        """``(U, V)`` matrices; cached in eval mode (no grad) until a parameter changes."""
        return self.U.matrix(), self.V.matrix()

    @property
    def weight(self) -> Tensor:
        """The equivalent dense weight ``U[:, :r] Σ V[:, :r]ᵀ``, shape ``(out, in)``."""
        u, v = self._dense()
        r = self.rank
        return (u[:, :r] * torch.exp(self.log_sigma)) @ v[:, :r].T

    @property
    def bias(self) -> Tensor | None:
        return self.bias_param

    def _b(self, like: Tensor) -> Tensor | float:
        return 0.0 if self.bias_param is None else self.bias_param.to(like.dtype)

    def _eval_mats(self, dtype: torch.dtype) -> tuple[Tensor, ...] | None:
        """Dense matrices for the eval fast path, or ``None`` while training / under grad."""
        if self.training or torch.is_grad_enabled():
            return None
        if _compiling():  # a traced graph computes the matrices itself; the cache check would break it
            return tuple(m.to(dtype) for m in self._build_eval_mats())
        key = (*((t.data_ptr(), t._version, t.dtype) for t in (*self.parameters(), *self.buffers())),
               dtype)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, tuple(m.to(dtype) for m in self._build_eval_mats()))
        return self._cache[1]

    def _build_eval_mats(self) -> tuple[Tensor, ...]:
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
    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs: object) -> Linear:
        """A flowified layer with the weight and bias of a trained ``nn.Linear`` (via SVD).

        Singular vectors of determinant −1 are handled by the rotations' sign buffers. A weight
        with a zero singular value has no flowified equivalent and raises ``ValueError``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"Linear.from_linear: expected torch.nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach().to(torch.float64)
        out_f, in_f = w.shape
        if kwargs.get("parametrization") == "gram":
            gram = Linear(in_f, out_f, bias=linear.bias is not None, **kwargs).double()  # type: ignore[arg-type]
            return gram._copy_from(gram, linear).to(linear.weight.dtype)  # type: ignore[attr-defined]
        layer = Linear(in_f, out_f, bias=linear.bias is not None, **kwargs).double()  # type: ignore[arg-type]
        u, s, vh = torch.linalg.svd(w, full_matrices=True)
        if s.min() <= _MIN_SINGULAR_VALUE * max(1.0, s.max().item()):
            raise ValueError(
                f"Linear.from_linear: the weight of {linear} is rank-deficient (smallest singular "
                f"value {s.min().item():.3g}); a flowified layer needs full rank"
            )
        with torch.no_grad():
            layer.U.set_matrix(u)
            layer.V.set_matrix(vh.T)
            layer.log_sigma.copy_(torch.log(s).to(layer.log_sigma))
            r = layer.rank
            fit = (layer.U.matrix().double()[:, :r] * s) @ layer.V.matrix().double()[:, :r].T
            if not torch.allclose(fit, w, atol=1e-6 * max(1.0, s.max().item())):
                raise ValueError("Linear.from_linear: could not reproduce the weight")
            if linear.bias is not None:
                layer.bias_param.copy_(linear.bias.detach().to(layer.bias_param))
        return layer.to(linear.weight.dtype)


class SquareLinear(Linear, Bijection):
    """``in == out``: an invertible linear map, ``z = U Σ Vᵀ x + b``; contribution ``Σ log σ``."""

    def _build_eval_mats(self) -> tuple[Tensor, ...]:
        return (self.weight.detach(),)

    def forward_parts(self, x: Tensor) -> tuple[Tensor, None, None, Tensor]:
        mats = self._eval_mats(x.dtype)
        if mats is not None:
            z = x @ mats[0].T
        else:
            z = self.U.rotate(self.V.rotate_t(x) * torch.exp(self.log_sigma).to(x.dtype))
        return z + self._b(x), None, None, self._log_det(x)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, _, _, log_det = self.forward_parts(x)
        return z, log_det.expand(x.shape[0])

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return self.inverse_parts(z, None)


class ReducingLinear(Linear, InferenceSurjection):
    """``in > out``: exact, with a right inverse that samples the dropped coordinates."""

    def _init_regime(self, *, inverse_density: str, noise: str) -> None:
        drop = self.in_features - self.out_features
        self.inverse_density = make_inverse_density(
            inverse_density, (drop,), (self.out_features,))  # type: ignore[arg-type]

    def _build_eval_mats(self) -> tuple[Tensor, ...]:
        v = self.V.matrix().detach()
        return (torch.cat([self.weight.detach(), v[:, self.rank:].T], dim=0),)

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

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, dropped, _, log_det = self.forward_parts(x)
        return z, log_det + self.inverse_density.log_prob(dropped, z)

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        d = self.inverse_density.draw(z, mean=mean)
        return self.inverse_parts(z, d)


class IncreasingLinear(Linear, GenerativeSurjection):
    """``in < out``: a lower bound; noise fills the ``out − in`` new directions."""

    def _init_regime(self, *, inverse_density: str, noise: str) -> None:
        self.noise = Noise(noise)  # type: ignore[arg-type]

    @property
    def bounded_noise(self) -> bool:
        return self.noise.bounded

    def _build_eval_mats(self) -> tuple[Tensor, ...]:
        u = self.U.matrix().detach()
        return (self.weight.detach(), u[:, self.rank:])

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

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, _, log_q, log_det = self.forward_parts(x)
        return z, log_det - log_q

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return self.inverse_parts(z, None)
