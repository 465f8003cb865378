"""Neural-spline-flow coupling stacks (nflows) used by the paper's "+NSF" models (appendix C).

Each stack alternates nflows' rational-quadratic coupling transforms (5 bins, linear tails, bound 3)
with reversals of the feature order, as in the official code; the conditioners are a dense network
(3 hidden layers of 256) for vectors and a 3×3 convolutional network (3 hidden layers of 32
channels) for feature maps. Wrapped as :class:`~survae_flowify.NflowsBijection`.
"""

from __future__ import annotations

from nflows import transforms
from torch import Tensor, nn

from survae_flowify.transforms import NflowsBijection

__all__ = ["nsf_stack"]

_DENSE_HIDDEN = 256
_CONV_HIDDEN = 32
_NUM_BINS = 5
_TAIL_BOUND = 3.0


class _DenseConditioner(nn.Module):
    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        h = _DENSE_HIDDEN
        self.net = nn.Sequential(
            nn.Linear(in_features, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
            nn.Linear(h, h), nn.ReLU(), nn.Linear(h, out_features),
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


class _ConvConditioner(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        h = _CONV_HIDDEN
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, h, 3, padding=1), nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1), nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1), nn.ReLU(),
            nn.Conv2d(h, out_channels, 3, padding=1),
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def _make_dense(i: int, o: int) -> nn.Module:
    return _DenseConditioner(i, o)


def _make_conv(i: int, o: int) -> nn.Module:
    return _ConvConditioner(i, o)


def nsf_stack(shape: tuple[int, ...], num_couplings: int) -> NflowsBijection:
    """``num_couplings`` RQ couplings over ``shape`` = ``(D,)`` or ``(C, H, W)`` (split on dim 1)."""
    features = shape[0]
    if features < 2:
        raise ValueError(f"nsf_stack: need at least 2 features/channels to couple, got shape {shape}")
    mask = [0] * (features // 2) + [1] * (features - features // 2)
    make = _make_dense if len(shape) == 1 else _make_conv
    parts: list[nn.Module] = []
    for i in range(num_couplings):
        parts.append(transforms.PiecewiseRationalQuadraticCouplingTransform(
            mask, make, num_bins=_NUM_BINS, tails="linear", tail_bound=_TAIL_BOUND))
        if i < num_couplings - 1:
            parts.append(transforms.ReversePermutation(features))
    return NflowsBijection(transforms.CompositeTransform(parts), shape=shape)
