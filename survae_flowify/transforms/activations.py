r"""Elementwise bijective activations: the invertible ones of ``torch.nn``, with exact log-dets.

Each maps every entry of any event shape on its own, so the Jacobian is diagonal and the
contribution is ``V = Σ_i log |f'(x_i)|``. :class:`LeakyReLU` and :class:`ELU` (with its
``α``) and :class:`Softplus` are bijections of ``ℝ`` onto ``ℝ``, ``(−α, ∞)`` and ``(0, ∞)``;
:class:`Tanh` and :class:`Sigmoid` onto ``(−1, 1)`` and ``(0, 1)``. A map onto an interval
leaves the rest of ``ℝ`` without a preimage: a flow whose base puts mass there is a density of
total mass below 1 (the mass the base gives the interval), and its inverse refuses a latent
outside the interval with a ``ValueError`` (no NaN is returned).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from survae_flowify import _checks, _state
from survae_flowify.algebra.transform import Bijection

__all__ = ["ELU", "LeakyReLU", "Sigmoid", "Softplus", "Tanh"]

_LOG_2 = math.log(2.0)


def _sum_events(v: Tensor) -> Tensor:
    """``(B, …) → (B,)``: the log-det of an elementwise map, summed over the event."""
    return v.flatten(1).sum(1)


def _check_range(layer: Bijection, z: Tensor, low: float, high: float) -> None:
    """Raise unless every entry of ``z`` lies in ``(low, high)``, the image of ``layer``.

    One device sync per inverse call (never in the forward, the training path)."""
    if not _state.validation_enabled():
        return
    if z.numel() and not bool(((z > low) & (z < high)).all()):
        raise ValueError(
            f"{type(layer).__name__}({layer.extra_repr()}): z must lie in ({low}, {high}), the image of the "
            f"map; got values in [{z.min().item():.4g}, {z.max().item():.4g}]; a base density with mass "
            "outside the image has no preimage there"
        )


class LeakyReLU(Bijection):
    r"""``z = x`` for ``x ≥ 0`` and ``z = a·x`` otherwise, ``a > 0`` (the paper uses 0.5).

    Contribution ``V = log(a) · #{i : x_i < 0}``. Any event shape.
    """

    def __init__(self, negative_slope: float = 0.5) -> None:
        super().__init__()
        # 0 (or a non-finite slope) would make the map non-invertible.
        self.negative_slope = _checks.positive_float("LeakyReLU", "negative_slope", negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        neg = x < 0
        z = torch.where(neg, x * self.negative_slope, x)
        contribution = neg.flatten(1).sum(1).to(x.dtype) * math.log(self.negative_slope)
        return z, contribution

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return torch.where(z < 0, z / self.negative_slope, z)


class ELU(Bijection):
    r"""``z = x`` for ``x > 0`` and ``z = α(eˣ − 1)`` otherwise, ``α > 0``: ``ℝ → (−α, ∞)``.

    Contribution ``V = Σ_{i: x_i ≤ 0} (log α + x_i)``; inverse ``x = log(1 + z/α)`` for ``z ≤ 0``.
    Matches ``torch.nn.ELU(alpha)``. Any event shape.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = _checks.positive_float("ELU", "alpha", alpha)  # α ≤ 0 is not injective

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        neg = x <= 0
        z = torch.where(neg, self.alpha * torch.expm1(x.clamp(max=0)), x)
        log_det = torch.where(neg, x + math.log(self.alpha), torch.zeros_like(x))
        return z, _sum_events(log_det)

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        _check_range(self, z, -self.alpha, math.inf)
        return torch.where(z <= 0, torch.log1p(z.clamp(max=0) / self.alpha), z)


class Tanh(Bijection):
    r"""``z = tanh(x)``: ``ℝ → (−1, 1)``.

    Contribution ``V = Σ_i log(1 − tanh² x_i) = Σ_i 2(log 2 − x_i − softplus(−2x_i))`` (the stable
    form); inverse ``x = atanh(z)``. Any event shape.
    """

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.tanh(x), _sum_events(2.0 * (_LOG_2 - x - F.softplus(-2.0 * x)))

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        _check_range(self, z, -1.0, 1.0)
        return torch.atanh(z)


class Sigmoid(Bijection):
    r"""``z = σ(x) = 1/(1 + e^{−x})``: ``ℝ → (0, 1)``.

    Contribution ``V = Σ_i log σ(x_i)(1 − σ(x_i)) = −Σ_i (softplus(x_i) + softplus(−x_i))``;
    inverse ``x = log z − log(1 − z)``. Any event shape.
    """

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(x), _sum_events(-F.softplus(x) - F.softplus(-x))

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        _check_range(self, z, 0.0, 1.0)
        return torch.logit(z)


class Softplus(Bijection):
    r"""``z = softplus(βx)/β = log(1 + e^{βx})/β``, ``β > 0``: ``ℝ → (0, ∞)``.

    Contribution ``V = Σ_i log σ(βx_i)``; inverse ``x = z + log(1 − e^{−βz})/β``. Matches
    ``torch.nn.Softplus(beta)`` up to its ``threshold`` shortcut (torch returns ``x`` where
    ``βx > threshold``, an error of ``e^{−threshold}/β``, ``2·10⁻⁹`` for the default 20). Any
    event shape.
    """

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        self.beta = _checks.positive_float("Softplus", "beta", beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        bx = self.beta * x
        return F.softplus(bx) / self.beta, _sum_events(F.logsigmoid(bx))

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        _check_range(self, z, 0.0, math.inf)
        return z + torch.log(-torch.expm1(-self.beta * z)) / self.beta
