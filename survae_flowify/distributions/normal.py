"""Base distributions over an event shape; ``log_prob`` sums over the event, giving ``(B,)``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify import _checks
from survae_flowify.algebra.transform import check_context, check_input

__all__ = ["ConditionalNormal", "DiagonalNormal", "StandardNormal"]

_LOG_2PI = math.log(2 * math.pi)
_LOG_SCALE_BOUND = 5.0


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


class ConditionalNormal(nn.Module):
    r"""A conditional base ``p(z | a) = N(μ(a), diag σ(a)²)`` over the event shape, for a context
    ``a`` of shape ``(B, context_features)``.

    An MLP ``Linear(c, h) → GELU → Linear(h, 2D)`` (``D`` the number of entries of the event,
    ``h = hidden``) predicts ``μ`` and ``log σ``, reshaped to the event shape;
    ``log σ = 5·tanh(raw/5)`` is softly bounded for numerical stability. The last layer starts at
    zero, so at initialization the base is ``N(0, I)`` for every context:

    .. math:: \log p(z \mid a) = \sum_i \Big[-\tfrac12\Big(\tfrac{z_i − μ_i(a)}{σ_i(a)}\Big)^2
              − \log σ_i(a) − \tfrac12\log 2π\Big].

    :class:`~survae_flowify.Flow` gives it the (embedded) context: ``log_prob(z, context)`` and
    ``sample(n, context, mean=False)`` with ``context`` of shape ``(n, context_features)``; a
    missing or misshapen context raises a ``ValueError`` naming the expected shape.
    """

    def __init__(self, shape: int | tuple[int, ...], context_features: int, *, hidden: int = 64) -> None:
        super().__init__()
        self.shape = _event("ConditionalNormal", (shape,))
        self.context_features = _checks.positive_int("ConditionalNormal", "context_features",
                                                     context_features)
        self.hidden = _checks.positive_int("ConditionalNormal", "hidden", hidden)
        last = nn.Linear(self.hidden, 2 * math.prod(self.shape))
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(nn.Linear(self.context_features, self.hidden), nn.GELU(), last)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, context_features={self.context_features}"

    def params(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """``(μ, log σ)`` of shape ``(B, *shape)`` each, for a context ``(B, context_features)``."""
        loc, raw = self.net(context.to(self.net[0].weight.dtype)).chunk(2, dim=1)
        # A soft bound on log σ keeps early training and float32 stable; |log σ| < 5.
        log_scale = _LOG_SCALE_BOUND * torch.tanh(raw / _LOG_SCALE_BOUND)
        return loc.view(-1, *self.shape), log_scale.view(-1, *self.shape)

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        check_input(self, z, self.shape, what="z")
        check_context(self, context, self.context_features, z.shape[0])
        loc, log_scale = self.params(context)  # type: ignore[arg-type]
        u = (z - loc) * torch.exp(-log_scale)
        return (-0.5 * u.square() - log_scale - 0.5 * _LOG_2PI).flatten(1).sum(1)

    def sample(self, n: int, context: Tensor | None = None, *, mean: bool = False) -> Tensor:
        """``n`` samples, one per row of ``context`` (``(n, context_features)``); ``mean=True``
        returns the means ``μ(a)``."""
        _checks.integer("ConditionalNormal.sample", "n", n, minimum=0)
        _checks.boolean("ConditionalNormal.sample", "mean", mean)
        check_context(self, context, self.context_features, n)
        loc, log_scale = self.params(context)  # type: ignore[arg-type]
        if mean:
            return loc
        return loc + torch.exp(log_scale) * torch.randn_like(loc)
