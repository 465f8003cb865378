"""Base distributions over an event shape; ``log_prob`` sums over the event, giving ``(B,)``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify import _checks
from survae_flowify.algebra.transform import check_input

__all__ = ["DiagonalNormal", "StandardNormal"]

_LOG_2PI = math.log(2 * math.pi)


def _event(owner: str, shape: tuple) -> tuple[int, ...]:
    """``StandardNormal(1, 28, 28)`` and ``StandardNormal((1, 28, 28))`` alike."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    return _checks.shape(owner, "shape", shape)  # type: ignore[return-value]


class StandardNormal(nn.Module):
    r"""``N(0, I)`` over the event shape: ``log p(z) = −½‖z‖² − ½ D log 2π``.

    Example: ``StandardNormal(8)`` or ``StandardNormal(1, 28, 28)``.
    """

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = _event("StandardNormal", shape)
        # A buffer, so the distribution follows ``.to(device, dtype)`` like any module.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def log_prob(self, z: Tensor) -> Tensor:
        check_input(self, z, self.shape, what="z")
        return -0.5 * z.flatten(1).square().sum(1) - 0.5 * self.numel * _LOG_2PI

    def sample(self, n: int, *, mean: bool = False) -> Tensor:
        """``n`` samples; ``mean=True`` returns the mode (zeros)."""
        _checks.positive_int("StandardNormal.sample", "n", n)
        _checks.boolean("StandardNormal.sample", "mean", mean)
        out = self._anchor.new_zeros((n, *self.shape))
        return out if mean else torch.randn_like(out)


class DiagonalNormal(nn.Module):
    r"""``N(μ, diag σ²)`` with learned ``μ`` and ``log σ`` of the event shape.

    ``log p(z) = Σ_i [−½((z_i − μ_i)/σ_i)² − log σ_i − ½ log 2π]``.
    """

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = _event("DiagonalNormal", shape)
        self.loc = nn.Parameter(torch.zeros(self.shape))
        self.log_scale = nn.Parameter(torch.zeros(self.shape))

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    def log_prob(self, z: Tensor) -> Tensor:
        check_input(self, z, self.shape, what="z")
        u = (z - self.loc) * torch.exp(-self.log_scale)
        per = -0.5 * u.square() - self.log_scale - 0.5 * _LOG_2PI
        return per.flatten(1).sum(1)

    def sample(self, n: int, *, mean: bool = False) -> Tensor:
        """``n`` samples; ``mean=True`` returns the mean ``μ``."""
        _checks.positive_int("DiagonalNormal.sample", "n", n)
        _checks.boolean("DiagonalNormal.sample", "mean", mean)
        loc = self.loc.expand(n, *self.shape)
        if mean:
            return loc.clone()
        return loc + torch.exp(self.log_scale) * torch.randn_like(loc)
