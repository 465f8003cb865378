"""Battery cases for the generic layers (survae_flowify.transforms)."""

from __future__ import annotations

import torch
from nflows.nn.nets import ResidualNet
from nflows.transforms import PiecewiseRationalQuadraticCouplingTransform

import survae_flowify as ffn
from tests.cases.base import Case


def _nflows_coupling() -> ffn.NflowsBijection:
    mask = torch.tensor([1, 0, 1, 0])
    t = PiecewiseRationalQuadraticCouplingTransform(
        mask,
        lambda i, o: ResidualNet(i, o, hidden_features=8, num_blocks=1),
        tails="linear",
        tail_bound=3.0,
    )
    return ffn.NflowsBijection(t, shape=4)


CASES: dict[str, Case] = {
    "flatten": Case(lambda: ffn.Flatten((2, 3, 2)), (2, 3, 2), linear_gaussian=True),
    "reshape": Case(lambda: ffn.Reshape((6,), (2, 3)), (6,), linear_gaussian=True),
    "leaky_relu": Case(lambda: ffn.LeakyReLU(0.5), (5,)),
    "leaky_relu_image": Case(lambda: ffn.LeakyReLU(0.2), (2, 3, 3)),
    "rq_spline": Case(lambda: ffn.RqSpline(num_bins=6, tail_bound=2.0), (5,)),
    "slice_normal": Case(lambda: ffn.Slice(5, 2), (5,), linear_gaussian=True, log_det=False),
    "slice_diagonal": Case(
        lambda: ffn.Slice(5, 3, inverse_density="diagonal"), (5,), linear_gaussian=True,
        log_det=False,
    ),
    "slice_conditional": Case(
        lambda: ffn.Slice(6, 2, inverse_density="conditional"), (6,), log_det=False
    ),
    "slice_conditional_image": Case(
        lambda: ffn.Slice((4, 3, 3), 1, inverse_density="conditional"), (4, 3, 3), log_det=False
    ),
    "augment_normal": Case(lambda: ffn.Augment(3, 2), (3,), linear_gaussian=True),
    "augment_uniform": Case(lambda: ffn.Augment(3, 2, noise="uniform"), (3,)),
    "repeat_normal": Case(lambda: ffn.Repeat(3, 3), (3,), linear_gaussian=True),
    "repeat_uniform": Case(lambda: ffn.Repeat((2, 2, 2), 2, noise="uniform"), (2, 2, 2)),
    "dequantize": Case(
        lambda: ffn.Dequantize(8),
        (4,),
        sample_input=lambda b, dtype: torch.randint(0, 8, (b, 4)).to(dtype),
        log_det=False,
        gradcheck=False,
    ),
    "nflows_coupling": Case(_nflows_coupling, (4,)),
    "sequential_mixed": Case(
        lambda: ffn.Sequential(ffn.Augment(2, 1), ffn.LeakyReLU(0.5), ffn.RqSpline(),
                               ffn.Repeat(3, 2), ffn.Slice(6, 4)),
        (2,),
        log_det=False,
    ),
    "sequential_linear_gaussian": Case(
        lambda: ffn.Sequential(ffn.Augment(2, 2), ffn.Repeat(4, 2), ffn.Slice(8, 3,
                               inverse_density="diagonal")),
        (2,),
        linear_gaussian=True,
        log_det=False,
    ),
}
