"""Battery cases for the structural bijections (ActNorm, Conv1x1, Reverse, Permute, Squeeze)."""

from __future__ import annotations

import torch

import survae_flowify as ffn
from survae_flowify.bijections.actnorm import ActNorm
from survae_flowify.bijections.conv1x1 import Conv1x1
from survae_flowify.bijections.permutations import Permute, Reverse
from survae_flowify.bijections.squeeze import Squeeze
from tests.cases.base import Case


def _initialized_actnorm(shape: tuple[int, ...]) -> ActNorm:
    """An ActNorm past its data-dependent initialisation (one training batch off the origin), so
    the battery's first training-mode forward does not re-initialise it."""
    layer = ActNorm(shape)
    gen = torch.Generator().manual_seed(4)
    layer(2.0 * torch.randn(16, *shape, generator=gen) + 0.5)
    return layer


def _glow_like_stack() -> ffn.Sequential:
    """All five together, with known event shapes at both ends (for the closed-form oracle)."""
    return ffn.Sequential(
        _initialized_actnorm((1, 4, 4)),
        Squeeze(2),
        Conv1x1(4),
        Reverse(),
        Permute([2, 0, 3, 1]),
        _initialized_actnorm((4, 2, 2)),
    )


CASES: dict[str, Case] = {
    "actnorm_vector": Case(lambda: _initialized_actnorm((5,)), (5,), linear_gaussian=True),
    "actnorm_image": Case(lambda: _initialized_actnorm((3, 4, 2)), (3, 4, 2), linear_gaussian=True),
    "conv1x1_vector": Case(lambda: Conv1x1(4), (4,)),
    "conv1x1_image": Case(lambda: Conv1x1(3), (3, 2, 4)),
    "reverse_vector": Case(Reverse, (5,)),
    "reverse_image": Case(Reverse, (3, 2, 2)),
    "permute_vector": Case(lambda: Permute([3, 0, 4, 1, 2]), (5,)),
    "permute_image": Case(lambda: Permute(torch.tensor([2, 0, 1])), (3, 2, 2)),
    "squeeze_2": Case(Squeeze, (2, 4, 6)),
    "squeeze_3": Case(lambda: Squeeze(3), (1, 3, 6)),
    "structural_stack": Case(_glow_like_stack, (1, 4, 4), linear_gaussian=True),
}
