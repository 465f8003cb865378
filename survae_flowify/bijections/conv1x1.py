r"""``Conv1x1``: Glow's invertible 1×1 convolution in LU form (Kingma & Dhariwal 2018, §3.2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify import _checks, _state
from survae_flowify.algebra.transform import Bijection, Shape, _describe

__all__ = ["Conv1x1"]


class Conv1x1(Bijection):
    r"""An invertible channel mixing ``z_{:,p} = W x_{:,p}`` at every position ``p`` (Glow §3.2).

    ``W ∈ ℝ^{C×C}`` is kept in LU form,

    .. math:: W = P\,L\,\big(U + \operatorname{diag}(\operatorname{sign}(s)\, e^{\log|s|})\big),

    ``P`` a fixed permutation (a buffer), ``L`` unit lower triangular, ``U`` strictly upper
    triangular and ``log|s|`` learned, ``sign(s)`` fixed (a buffer). The contribution is

    .. math:: V = H W \sum_c \log|s_c| ,

    with ``H·W`` the number of positions (1 for vectors). Inputs ``(B, C, H, W)`` (a 1×1
    convolution) or ``(B, C)`` (an LU-parametrised linear bijection ``z = W x``). The inverse
    ``x = W⁻¹ z`` uses ``W⁻¹ = (U + diag s)⁻¹ L⁻¹ Pᵀ``, built by two triangular solves on the
    ``C × C`` matrix (``O(C³)``, independent of the batch). Nothing is cached: rebuilding ``W``
    costs ``O(C³)``, small beside the ``O(B·H·W·C²)`` of applying it.

    Initialised as Glow does, from the LU factors of a random rotation (the QR factor of a
    Gaussian matrix drawn from torch's global generator), so ``|det W| = 1`` at start.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = _checks.positive_int("Conv1x1", "channels", channels)
        q = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        # P as an index vector: (P v)_i = v_{perm_i}; P has a single 1 per row.
        self.register_buffer("perm", p.argmax(1))
        self.register_buffer("sign_s", torch.sign(s).float())
        self.lower = nn.Parameter(torch.tril(lower, -1).float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_abs_s = nn.Parameter(torch.log(s.abs()).float())

    def extra_repr(self) -> str:
        return f"channels={self.channels}"

    @property
    def in_shape(self) -> Shape | None:
        return None  # (C,) or (C, H, W): checked in _check_shape

    def _check_shape(self, t: Tensor, what: str) -> None:
        if not _state.validation_enabled():
            return
        if t.dim() not in (2, 4) or t.shape[1] != self.channels:
            c = self.channels
            raise ValueError(
                f"{_describe(self)}: expected {what} of shape (batch, {c}) or (batch, {c}, H, W), "
                f"got {tuple(t.shape)}"
            )

    def _factors(self) -> tuple[Tensor, Tensor]:
        """The unit lower factor ``L`` and the upper factor ``U + diag(s)``."""
        eye = torch.eye(self.channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * torch.exp(self.log_abs_s))
        return lower, upper

    @property
    def weight(self) -> Tensor:
        """The matrix ``W = P L (U + diag s)``, ``(C, C)``."""
        lower, upper = self._factors()
        lu = lower @ upper
        return lu[self.perm]

    @property
    def inverse_weight(self) -> Tensor:
        """``W^{-1} = (U + diag s)^{-1} L^{-1} Pᵀ`` from two triangular solves, ``(C, C)``."""
        lower, upper = self._factors()
        eye = torch.eye(self.channels, dtype=lower.dtype, device=lower.device)
        pt = eye[self.perm].T
        y = torch.linalg.solve_triangular(lower, pt, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, y, upper=True)

    @staticmethod
    def _mix(matrix: Tensor, t: Tensor) -> Tensor:
        if t.dim() == 2:
            return t @ matrix.T
        return torch.einsum("ij,bjhw->bihw", matrix, t)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check_shape(x, "x")
        positions = math.prod(x.shape[2:])
        log_det = positions * self.log_abs_s.sum()
        return self._mix(self.weight, x), log_det.expand(x.shape[0])

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        self._check_shape(z, "z")
        return self._mix(self.inverse_weight, z)
