"""Small networks that predict the parameters of couplings and autoregressive layers.

Every net's last layer starts at zero (weights and bias), so the layer it serves starts as the
identity (see :mod:`survae_flowify.bijections._elementwise`). SiLU activations keep the layers
smooth, so finite-difference gradient checks do not land on a kink.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from survae_flowify import _checks

__all__ = ["MLP", "ConvNet", "MaskedMLP", "hidden_widths"]


def hidden_widths(owner: str, value: object) -> tuple[int, ...]:
    """``hidden``: an int ``h`` (two hidden layers of width ``h``) or a sequence of widths."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) > 0:
        return tuple(_checks.positive_int(owner, "hidden", h) for h in value)
    if isinstance(value, int) and not isinstance(value, bool):
        h = _checks.positive_int(owner, "hidden", value)
        return (h, h)
    raise TypeError(f"{owner}: hidden must be a positive int or a non-empty sequence of positive "
                    f"ints, got {value!r}")


def _zero(layer: nn.Module) -> nn.Module:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Module):
    """``(B, n_in)`` → ``(B, n_out)``; a context ``(B, c)`` is concatenated to the input."""

    def __init__(self, n_in: int, n_out: int, hidden: tuple[int, ...], context_features: int | None) -> None:
        super().__init__()
        widths = (n_in + (context_features or 0), *hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(widths))
        self.out = _zero(nn.Linear(widths[-1], n_out))

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        h = x if context is None else torch.cat([x, context], dim=1)
        for layer in self.hidden:
            h = F.silu(layer(h))
        return self.out(h)


class ConvNet(nn.Module):
    """``(B, C_in, H, W)`` → ``(B, C_out, H, W)``: a 3×3 conv, 1×1 convs, a 3×3 conv (same padding).

    A context ``(B, c)`` enters as ``c`` extra input channels, constant over the image.
    """

    def __init__(self, n_in: int, n_out: int, hidden: tuple[int, ...], context_features: int | None) -> None:
        super().__init__()
        widths = (n_in + (context_features or 0), *hidden)
        sizes = [3] + [1] * (len(hidden) - 1)
        self.hidden = nn.ModuleList(
            nn.Conv2d(a, b, k, padding=k // 2) for a, b, k in zip(widths[:-1], widths[1:], sizes, strict=True)
        )
        self.out = _zero(nn.Conv2d(widths[-1], n_out, 3, padding=1))

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        h = x
        if context is not None:
            h = torch.cat([x, context[:, :, None, None].expand(-1, -1, *x.shape[2:])], dim=1)
        for layer in self.hidden:
            h = F.silu(layer(h))
        return self.out(h)


class _MaskedLinear(nn.Linear):
    """``y = (W ⊙ M) x + b`` with a fixed 0/1 mask ``M`` (a buffer, so it follows ``.to()``)."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MaskedMLP(nn.Module):
    r"""MADE (Germain et al., 2015): ``(B, D)`` → ``(P, B, D)``, output ``i`` sees only ``x_{<i}``.

    Degrees: input ``i`` has ``m(i) = i`` (``1 … D``); hidden unit ``j`` of every layer has
    ``m(j) = 1 + (j mod (D − 1))`` (cycling; 0 when ``D = 1``); a hidden unit sees the units of the
    layer below with ``m ≤ m(j)``, and the ``P`` outputs of feature ``i`` see the last hidden units
    with ``m < i``.
    A context ``(B, c)`` enters the first hidden layer through an unmasked linear map.
    """

    def __init__(self, features: int, num_params: int, hidden: tuple[int, ...],
                 context_features: int | None) -> None:
        super().__init__()
        self.features, self.num_params = features, num_params
        degrees = [torch.arange(1, features + 1)]
        layers = []
        for width in hidden:
            # 1 … D − 1 cycling; with D = 1 all are 0: they see only the context, and the output
            # (degree 1) sees them, so a single feature is still conditioned on the context.
            degrees.append(torch.arange(width) % max(features - 1, 1) + min(1, features - 1))
            layers.append(_MaskedLinear((degrees[-1][:, None] >= degrees[-2][None, :]).float()))
        self.hidden = nn.ModuleList(layers)
        out_degrees = degrees[0].repeat(num_params)  # output unit p·D + i serves feature i
        self.out = _zero(_MaskedLinear((out_degrees[:, None] > degrees[-1][None, :]).float()))
        self.context = (None if context_features is None
                        else nn.Linear(context_features, hidden[0], bias=False))

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        h = self.hidden[0](x)
        if self.context is not None:
            h = h + self.context(context)
        h = F.silu(h)
        for layer in self.hidden[1:]:
            h = F.silu(layer(h))
        return self.out(h).view(x.shape[0], self.num_params, self.features).movedim(1, 0)
