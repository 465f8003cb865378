"""Battery cases for the layers ``flowify`` converts to: ElementwiseAffine (batch norm), the
invertible activations, the average-pooling surjection and Pad with a border on every side."""

from __future__ import annotations

import torch

import survae_flowify as ffn
from survae_flowify.bijections.elementwise import ElementwiseAffine
from survae_flowify.layers.avgpool import AvgPool2d
from survae_flowify.layers.conv import Conv2d
from survae_flowify.layers.pad import Pad
from survae_flowify.layers.parallel import Parallel
from survae_flowify.transforms.activations import ELU, Sigmoid, Softplus, Tanh
from tests.cases.base import Case


def _affine(shape: tuple[int, ...]) -> ElementwiseAffine:
    """Scales of both signs (the sign buffer) and sizes away from one."""
    c = shape[0]
    scale = torch.linspace(-1.5, 2.0, c) + 0.1 * (torch.arange(c) % 2)  # no zero entry
    return ElementwiseAffine(shape, scale=scale, shift=torch.linspace(-1.0, 1.0, c))


def _pool(kernel: int | tuple[int, int], c: int, size: tuple[int, int], density: str) -> ffn.Sequential:
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return ffn.Sequential(AvgPool2d(kernel, in_channels=c, inverse_density=density, hidden=8),
                          ffn.Flatten((c, size[0] // kh, size[1] // kw)))


def _pad_all_sides() -> ffn.Sequential:
    layer = Pad(3, 2, in_channels=1, image_size=(3, 4), padding=(1, 0, 2, 1))  # + tiling rows
    return ffn.Sequential(layer, ffn.Flatten((1, *layer.padded_size((3, 4)))))


def _parallel_exact() -> Parallel:
    """A square Linear beside a Tanh: a bijection of the whole."""
    return Parallel(ffn.Linear(2, 2), Tanh(), in_shapes=((2,), (3,)), out_shapes=((2,), (3,)))


def _parallel_after_repeat() -> ffn.Sequential:
    """torch.cat([a(h), b(h)]) as flowify builds it, with two reducing branches (the repetition
    is then the only bound, whose importance-weighted estimate converges within the battery's
    sample budget)."""
    both = Parallel(ffn.Linear(3, 2, inverse_density="diagonal"), ffn.Linear(3, 2), in_shapes=((3,), (3,)),
                    out_shapes=((2,), (2,)))
    return ffn.Sequential(ffn.Repeat((3,), 2), both)


CASES: dict[str, Case] = {
    "elementwise_affine_vector": Case(lambda: _affine((4,)), (4,), linear_gaussian=True),
    "elementwise_affine_image": Case(lambda: _affine((3, 2, 3)), (3, 2, 3), linear_gaussian=True),
    "elementwise_affine_open": Case(lambda: _affine((2, None, None)), (2, 3, 2)),
    "elu": Case(lambda: ELU(0.7), (5,)),
    "elu_image": Case(ELU, (2, 2, 3)),
    "tanh": Case(Tanh, (5,)),
    "sigmoid": Case(Sigmoid, (2, 3, 2)),
    "softplus": Case(lambda: Softplus(1.5), (5,)),
    "avgpool_normal": Case(lambda: _pool(2, 2, (2, 4), "normal"), (2, 2, 4), linear_gaussian=True,
                           log_det=False),
    "avgpool_diagonal": Case(lambda: _pool((1, 3), 1, (2, 3), "diagonal"), (1, 2, 3),
                             linear_gaussian=True, log_det=False),
    "avgpool_conditional": Case(lambda: AvgPool2d(2, in_channels=2, inverse_density="conditional",
                                                  hidden=8), (2, 4, 2), log_det=False),
    "parallel_exact": Case(_parallel_exact, (5,), linear_gaussian=False),
    "parallel_after_repeat": Case(_parallel_after_repeat, (3,), linear_gaussian=True, log_det=False),
    "pad_all_sides": Case(_pad_all_sides, (1, 3, 4), linear_gaussian=True),
    "pad_border_stride_1": Case(lambda: Pad(3, 1, in_channels=2, padding=1), (2, 3, 3)),
    "conv2d_padded_border": Case(
        lambda: Conv2d(1, 2, 3, 2, padding=(1, 1, 1, 0), image_size=4, inverse_density="diagonal"),
        (1, 4, 4), log_det=False,
    ),
}
