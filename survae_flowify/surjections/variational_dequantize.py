r"""Variational dequantization (Ho et al., 2019, Flow++ §3.1): learned noise inside each bin."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from survae_flowify import _checks, _state
from survae_flowify.algebra.flow import Flow
from survae_flowify.algebra.sequential import Sequential
from survae_flowify.algebra.transform import GenerativeSurjection, Shape
from survae_flowify.bijections.couplings import AffineCoupling, RqCoupling
from survae_flowify.bijections.permutations import Reverse
from survae_flowify.distributions import encoders
from survae_flowify.distributions.normal import ConditionalNormal
from survae_flowify.transforms.dequantize import check_levels

__all__ = ["VariationalDequantize"]

_OWNER = "VariationalDequantize"
CouplingKind = Literal["affine", "spline"]


class VariationalDequantize(GenerativeSurjection):
    r"""``y = (x + u) / L`` with ``u ~ q(u | x)`` on ``[0, 1)^D``, for integers ``x ∈ {0, …, L−1}^D``.

    The drop-in, learned counterpart of :class:`~survae_flowify.Dequantize` (same input, same
    output convention, same inverse): the encoder is a conditional density ``q_v(v | c)`` on
    ``R^D`` (:class:`~survae_flowify.ConditionalNormal` or an exact conditional
    :class:`~survae_flowify.Flow`, see :meth:`default_encoder`), ``u = σ(v)`` (the logistic
    sigmoid), so

    $$ \log q(u \mid x) = \log q_v(v \mid c) - \sum_i \log σ'(v_i), \qquad
       V = -D \log L - \log q(u \mid x), $$

    and ``log p_Y(y) + V`` lower-bounds the discrete ``log P(x)``, with equality when
    ``q(u | x)`` is the model's own density of ``y`` inside the bin of ``x``. The gap is
    ``KL(q(u | x) ‖ p(u | x))``; uniform dequantization is the case ``q = U(0, 1)^D``.

    The encoder sees the centred bins ``c = 2x/(L−1) − 1 ∈ [−1, 1]``, flattened to ``(B, D)``
    (images too: the encoder is a density over ``R^D`` whose ``context_features`` is ``D``, or a
    Flow with an ``embedding`` of that ``(B, D)`` context). ``shape`` is the event shape of
    ``x`` (default ``(D,)``, the encoder's); give ``shape=(C, H, W)`` for images.

    Inverse: ``x = clamp(⌊L·y⌋, 0, L−1)``. Under :func:`survae_flowify.noise_off`, ``u = ½``
    (bin centres) and ``V = −D log L``, as for ``Dequantize``. Input as for ``Dequantize``:
    integer tensors, or floating tensors of whole numbers in ``[0, L−1]`` (checked while
    validation is on).
    """

    accepts_integer = True
    # The encoder is conditioned on this layer's input, not on the flow's context.
    private_context: ClassVar[bool] = True

    def __init__(self, levels: int, encoder: nn.Module, *, shape: int | Sequence[int] | None = None) -> None:
        super().__init__()
        self.levels = _checks.integer(_OWNER, "levels", levels, minimum=2)
        self._shape = _event_shape(encoder, shape)
        self._d = math.prod(self._shape)
        event = encoders.check_density(_OWNER, "encoder", encoder, context_features=self._d)
        if event != (self._d,):
            raise ValueError(f"{_OWNER}: the encoder must be a density over R^{self._d} (event shape "
                             f"({self._d},), the flattened shape {self._shape}), got event shape {event}")
        self.encoder = encoder
        # Holds no value: the model's dtype and device, which integer input is converted to.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    @staticmethod
    def default_encoder(shape: int | Sequence[int], *, hidden: int = 64, couplings: int = 4,
                        coupling: CouplingKind = "affine") -> Flow:
        r"""``q_v(v | c)`` on ``R^D`` (``D`` entries of ``shape``): a conditional normal base
        ``N(μ(c), diag σ(c)²)`` under ``couplings`` coupling layers (``"affine"`` or
        ``"spline"``, MLP networks of width ``hidden`` that see ``c``), each followed by a
        :class:`~survae_flowify.Reverse`. For ``D = 1`` there is nothing to split: the base alone.
        """
        d = math.prod(_checks.shape(_OWNER + ".default_encoder", "shape", shape))
        hidden = _checks.positive_int(_OWNER + ".default_encoder", "hidden", hidden)
        couplings = _checks.integer(_OWNER + ".default_encoder", "couplings", couplings, minimum=0)
        kind = _checks.choice(_OWNER + ".default_encoder", "coupling", coupling, ("affine", "spline"))
        layer = AffineCoupling if kind == "affine" else RqCoupling
        parts: list[nn.Module] = []
        for _ in range(couplings if d >= 2 else 0):
            parts += [layer(d, hidden=hidden, context_features=d), Reverse()]
        return Flow(ConditionalNormal(d, d, hidden=hidden), Sequential(*parts))

    def extra_repr(self) -> str:
        return f"levels={self.levels}, shape={self._shape}"

    @property
    def in_shape(self) -> Shape:
        return self._shape

    @property
    def out_shape(self) -> Shape:
        return self._shape

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        xf = x if x.is_floating_point() else x.to(self._anchor.dtype)
        if _state.validation_enabled() and xf.device.type != "meta":
            check_levels(self, self.levels, x, xf)
        constant = xf.new_full((xf.shape[0],), -self._d * math.log(self.levels))
        if not _state.noise_enabled():
            return (xf + 0.5) / self.levels, constant
        context = (xf * (2 / (self.levels - 1)) - 1).flatten(1)
        v, log_q_v = encoders.draw(self.encoder, context, (self._d,))
        # log σ'(v) = −softplus(−v) − softplus(v): the sigmoid's log-det, stable for large |v|.
        log_q_u = log_q_v + (F.softplus(v) + F.softplus(-v)).sum(1)
        return (xf + torch.sigmoid(v).view_as(xf)) / self.levels, constant - log_q_u

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return torch.clamp(torch.floor(z * self.levels), 0, self.levels - 1)


def _event_shape(encoder: object, shape: object) -> tuple[int, ...]:
    """``shape`` if given, else the encoder's event shape."""
    if shape is not None:
        return _checks.shape(_OWNER, "shape", shape)  # type: ignore[return-value]
    return encoders.density_shape(_OWNER, "encoder", encoder)
