"""Battery cases for the flowified convolution: Pad, Unfold, the patch kernel and Conv2d.

Images are tiny (1–2 channels, 3×3 to 6×6) so that the autograd-Jacobian checks stay fast.
Layers whose output has open spatial sizes end in a ``Flatten`` of the known size, so that the
closed-form oracle gets a fixed base shape; ``Conv2d`` with ``image_size`` knows its output size.
Composites of several dimension-increasing steps skip the autograd log-det check: with the noise
off, ``½ log det JᵀJ`` of a composite embedding is not the sum of its parts' (the parts' noise
fills the complements, which is what makes their contributions add up in the flow).
"""

from __future__ import annotations

import survae_flowify as ffn
from survae_flowify.layers.conv import Conv2d, PatchLinear
from survae_flowify.layers.pad import Pad
from survae_flowify.layers.unfold import Unfold
from tests.cases.base import Case


def _unfold(k: int, s: int, c: int, size: int, noise: str) -> ffn.Sequential:
    out = (size - k) // s + 1
    return ffn.Sequential(
        Unfold(k, s, noise=noise, in_channels=c), ffn.Flatten((c * k * k, out, out))
    )


def _kernel(c_in: int, c_out: int, size: tuple[int, int], **kwargs) -> ffn.Sequential:
    return ffn.Sequential(PatchLinear(c_in, c_out, **kwargs), ffn.Flatten((c_out, *size)))


# Stacks take flat vectors: the battery names the entry layer from the top level only, and a
# leading Reshape keeps that entry a leaf (the Conv2d composites' own input errors come from
# their Pad, checked by the single-layer cases).
def _conv_stack_linear() -> ffn.Sequential:
    return ffn.Sequential(
        ffn.Reshape((9,), (1, 3, 3)),
        Conv2d(1, 4, 2, 1, image_size=3, inverse_density="diagonal"),
        Conv2d(4, 3, 2, 2, image_size=2, inverse_density="normal"),
    )


def _conv_stack() -> ffn.Sequential:
    return ffn.Sequential(
        ffn.Reshape((25,), (1, 5, 5)),
        Conv2d(1, 3, 3, 2, image_size=5, hidden=8),
        ffn.LeakyReLU(0.5),
        Conv2d(3, 5, 2, 1, image_size=2, noise="uniform", hidden=8),
    )


CASES: dict[str, Case] = {
    "pad_normal": Case(lambda: Pad(3, 2, in_channels=1, image_size=(4, 5)), (1, 4, 5),
                       linear_gaussian=True),
    "pad_uniform": Case(lambda: Pad(2, 2, noise="uniform", in_channels=2, image_size=5), (2, 5, 5)),
    "pad_not_needed": Case(lambda: Pad(3, 2, in_channels=1, image_size=5), (1, 5, 5),
                           linear_gaussian=True),
    "pad_stride_1": Case(lambda: Pad(3, 1, in_channels=2), (2, 4, 4)),
    "unfold_3_2_normal": Case(lambda: _unfold(3, 2, 1, 5, "normal"), (1, 5, 5), linear_gaussian=True),
    "unfold_2_1_normal": Case(lambda: _unfold(2, 1, 1, 4, "normal"), (1, 4, 4), linear_gaussian=True),
    "unfold_2_2_normal": Case(lambda: _unfold(2, 2, 2, 4, "normal"), (2, 4, 4), linear_gaussian=True),
    "unfold_3_2_uniform": Case(lambda: Unfold(3, 2, noise="uniform", in_channels=2), (2, 5, 5)),
    "unfold_2_1_uniform": Case(lambda: Unfold(2, 1, noise="uniform", in_channels=1), (1, 4, 4)),
    "unfold_2_2_uniform": Case(lambda: Unfold(2, 2, noise="uniform", in_channels=1), (1, 4, 6)),
    "unfold_sized": Case(lambda: Unfold(3, 2, in_channels=1, image_size=(5, 7)), (1, 5, 7),
                         linear_gaussian=True),
    "unfold_single_patch": Case(lambda: Unfold(3, 1, in_channels=2, image_size=3), (2, 3, 3),
                                linear_gaussian=True),
    "patch_linear_square": Case(lambda: _kernel(4, 4, (2, 3)), (4, 2, 3), linear_gaussian=True),
    "patch_linear_reducing_normal": Case(
        lambda: _kernel(6, 2, (2, 2), inverse_density="normal"), (6, 2, 2), linear_gaussian=True,
        log_det=False,
    ),
    "patch_linear_reducing_diagonal": Case(
        lambda: _kernel(5, 3, (2, 3), inverse_density="diagonal"), (5, 2, 3), linear_gaussian=True,
        log_det=False,
    ),
    "patch_linear_reducing_conditional": Case(
        lambda: PatchLinear(4, 1, inverse_density="conditional", hidden=8), (4, 3, 3), log_det=False
    ),
    "patch_linear_increasing_normal": Case(lambda: _kernel(2, 4, (1, 2)), (2, 1, 2),
                                           linear_gaussian=True),
    "patch_linear_increasing_uniform": Case(lambda: PatchLinear(2, 4, noise="uniform"), (2, 2, 3)),
    "conv2d_2_2_exact": Case(lambda: Conv2d(1, 2, 2, 2, image_size=4, inverse_density="normal"),
                             (1, 4, 4), linear_gaussian=True, log_det=False),
    "conv2d_2_2_padded": Case(
        lambda: Conv2d(1, 3, 2, 2, image_size=(3, 4), inverse_density="diagonal"), (1, 3, 4),
        linear_gaussian=True, log_det=False,
    ),
    "conv2d_3_2_diagonal": Case(
        lambda: Conv2d(1, 3, 3, 2, image_size=(4, 6), inverse_density="diagonal"), (1, 4, 6),
        log_det=False,
    ),
    "conv2d_2_1_increasing": Case(lambda: Conv2d(1, 5, 2, 1, image_size=3), (1, 3, 3),
                                  linear_gaussian=True, log_det=False),
    "conv2d_conditional": Case(lambda: Conv2d(2, 3, 2, 2, image_size=4, hidden=8), (2, 4, 4),
                               log_det=False),
    "conv2d_conditional_3x3_3x3": Case(
        lambda: Conv2d(2, 3, 2, 2, image_size=4, hidden=8, density_net="3x3-3x3"), (2, 4, 4),
        log_det=False),
    "conv2d_conditional_1x1_1x1": Case(
        lambda: Conv2d(2, 3, 3, 2, image_size=5, density_net="1x1-1x1"), (2, 5, 5), log_det=False),
    "conv2d_conditional_default_width": Case(lambda: Conv2d(2, 3, 2, 1, image_size=3), (2, 3, 3),
                                             log_det=False),
    "conv2d_uniform": Case(lambda: Conv2d(1, 4, 3, 2, noise="uniform", image_size=5), (1, 5, 5),
                           log_det=False),
    "conv2d_single_patch": Case(lambda: Conv2d(1, 5, 2, 1, noise="uniform", image_size=2), (1, 2, 2),
                                log_det=False),
    "conv2d_stack_linear": Case(_conv_stack_linear, (9,), linear_gaussian=True, log_det=False),
    # The rotation-free kernel (parametrization="lu"): its increasing regime's noise is not
    # orthogonal to the range of W, so no autograd log-det check there either.
    "patch_linear_lu_square": Case(lambda: _kernel(4, 4, (2, 3), parametrization="lu"), (4, 2, 3),
                                   linear_gaussian=True),
    "patch_linear_lu_reducing_normal": Case(
        lambda: _kernel(6, 2, (2, 2), inverse_density="normal", parametrization="lu"), (6, 2, 2),
        linear_gaussian=True, log_det=False),
    "patch_linear_lu_increasing_normal": Case(
        lambda: _kernel(2, 4, (1, 2), parametrization="lu"), (2, 1, 2), linear_gaussian=True,
        log_det=False),
    "conv2d_lu_conditional": Case(
        lambda: Conv2d(2, 3, 2, 2, image_size=4, hidden=8, parametrization="lu"), (2, 4, 4),
        log_det=False),
    "conv2d_lu_stack_linear": Case(
        lambda: ffn.Sequential(ffn.Reshape((9,), (1, 3, 3)),
                               Conv2d(1, 4, 2, 1, image_size=3, inverse_density="diagonal",
                                      parametrization="lu"),
                               Conv2d(4, 3, 2, 2, image_size=2, inverse_density="normal",
                                      parametrization="lu")),
        (9,), linear_gaussian=True, log_det=False),
    "conv2d_stack": Case(_conv_stack, (25,), log_det=False),
}
