"""The paper's models (appendix figures 8–11, appendix C and F) as :class:`~survae_flowify.Flow`.

Sizes follow the appendix figures and the official code. In every model the dropped coordinates
of a reducing layer get a conditional normal (``inverse_density="conditional"``), augmenting noise
is normal, and each activation is one rational-quadratic spline (10 bins, linear tails, bound 2);
the tabular MLPs use Leaky ReLU with slope 0.5 (appendix F). Image models start with
``Dequantize(levels)``, so ``flow.log_prob`` takes integer-valued images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from survae_flowify.algebra import Flow, Sequential, Transform
from survae_flowify.distributions import StandardNormal
from survae_flowify.layers.conv import Conv2d
from survae_flowify.layers.linear import Linear
from survae_flowify.models.nsf import nsf_stack
from survae_flowify.transforms import Dequantize, Flatten, LeakyReLU, RqSpline

__all__ = [
    "ConvSpec",
    "fconv1",
    "fconv1_nsf",
    "fconv2",
    "fconv2_nsf",
    "fmlp",
    "image_flow",
    "mlp_flow",
    "tabular_mlp",
]

Dataset = Literal["mnist", "cifar10"]
ConvSpec = tuple[int, int, int]  # (out_channels, kernel_size, stride)
NSF = "nsf"  # marker in a layer plan: an nflows coupling stack at this point

IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}

# Appendix figures 8–11 and the official code.
_FMLP = {"mnist": [512, 256, 128, 64, 32, 8], "cifar10": [1024, 512, 512, 256, 128]}
_FCONV1_CONVS = {
    "mnist": [(16, 3, 2), (24, 2, 2), (32, 3, 2), (48, 2, 1), (64, 2, 1)],
    "cifar10": [(27, 3, 2), (64, 3, 2), (100, 3, 2), (112, 3, 2), (128, 2, 2)],
}
_FCONV2_CONVS = {
    "mnist": [(4, 2, 2), (16, 2, 2), (32, 2, 2), (48, 2, 2), (64, 2, 2)],
    "cifar10": [(12, 2, 2), (48, 2, 2), (100, 2, 2), (112, 2, 2), (128, 2, 2)],
}
_CONV_MLP = {  # the dense part after the convolutions: widths of successive Linear layers
    "mnist": [64] * 6 + [32] + [32] * 6 + [8],
    "cifar10": None,  # 10 (FCONV1) or 12 (FCONV2) Linear(128, 128)
}
# "+NSF" variants (appendix C): convolutions with coupling stacks (num_couplings) in between.
_FCONV1_NSF = {
    "mnist": ([(16, 3, 2), (24, 2, 2), (32, 3, 2), (48, 2, 1), (64, 2, 1)], [0] * 5,
              [(None, 2), (32, 2), (8, 2)]),
    "cifar10": ([(27, 3, 2), (48, 3, 2), (72, 3, 2), (96, 3, 2), (128, 2, 2)], [4, 4, 4, 0, 0],
                [(None, 8)]),
}
_FCONV2_NSF = {
    "mnist": ([(4, 2, 2), (16, 2, 2), (24, 2, 2), (32, 2, 2), (64, 2, 2)], [2, 2, 2, 2, 0],
              [(None, 2), (32, 2), (8, 2)]),
    "cifar10": ([(12, 2, 2), (48, 2, 2), (72, 2, 2), (96, 2, 2), (128, 2, 2)], [4, 4, 4, 0, 0],
                [(None, 6)]),
}
# Appendix F: hand-designed widths; the second for every data set but BSDS300 (the first).
TABULAR_WIDTHS = {"default": [128, 64, 32, 16, 8], "bsds300": [128, 128, 128, 64, 32]}


def conv_output_size(size: int, kernel_size: int, stride: int) -> int:
    """Spatial size after ``Conv2d``: pad so the kernel tiles, then ``(H + p − k)/s + 1``."""
    pad = (-(size - kernel_size)) % stride
    return (size + pad - kernel_size) // stride + 1


def _check_dataset(name: str, dataset: str) -> str:
    if dataset not in IMAGE_SHAPES:
        raise ValueError(f"{name}: dataset must be one of {sorted(IMAGE_SHAPES)}, got {dataset!r}")
    return dataset


def image_flow(
    shape: tuple[int, int, int],
    convs: Sequence[ConvSpec],
    widths: Sequence[int],
    *,
    levels: int | None = 256,
    couplings_after_conv: Sequence[int] | None = None,
    dense_plan: Sequence[tuple[int | None, int]] | None = None,
    final_spline: bool = True,
    **layer_kwargs: object,
) -> Flow:
    """A flowified conv net: ``[Dequantize] → (Conv2d → RqSpline)* → Flatten → (Linear → RqSpline)*``.

    ``convs``: ``(out_channels, kernel_size, stride)`` per convolution. ``widths``: output sizes of
    the Linear layers after flattening. ``couplings_after_conv[i] > 0`` inserts an NSF coupling
    stack after convolution ``i``; ``dense_plan`` (``(width or None, couplings)``) replaces
    ``widths`` for the "+NSF" variants: an optional Linear to ``width`` then a coupling stack.
    ``layer_kwargs`` go to every Linear and Conv2d (e.g. ``inverse_density``, ``noise``).
    """
    kwargs = {"inverse_density": "conditional", **layer_kwargs}
    parts: list[Transform] = [Dequantize(levels)] if levels else []
    c, h, w = shape
    for i, (out_c, k, s) in enumerate(convs):
        parts += [Conv2d(c, out_c, k, s, image_size=(h, w), **kwargs), RqSpline()]
        c, h, w = out_c, conv_output_size(h, k, s), conv_output_size(w, k, s)
        if couplings_after_conv and couplings_after_conv[i]:
            parts.append(nsf_stack((c, h, w), couplings_after_conv[i]))
    parts.append(Flatten((c, h, w)))
    features = c * h * w
    if dense_plan is not None:
        for width, couplings in dense_plan:
            if width is not None:
                parts += [Linear(features, width, **kwargs), RqSpline()]
                features = width
            parts.append(nsf_stack((features,), couplings))
    else:
        for i, width in enumerate(widths):
            parts.append(Linear(features, width, **kwargs))
            if final_spline or i < len(widths) - 1:
                parts.append(RqSpline())
            features = width
    return Flow(StandardNormal(features), Sequential(*parts))


def mlp_flow(
    shape: tuple[int, ...],
    widths: Sequence[int],
    *,
    levels: int | None = None,
    **layer_kwargs: object,
) -> Flow:
    """``[Dequantize] → [Flatten] → (Linear → RqSpline)*`` ending in a Linear to ``widths[-1]``."""
    kwargs = {"inverse_density": "conditional", **layer_kwargs}
    parts: list[Transform] = [Dequantize(levels)] if levels else []
    if len(shape) > 1:
        parts.append(Flatten(tuple(shape)))
    features = math.prod(shape)
    for i, width in enumerate(widths):
        parts.append(Linear(features, width, **kwargs))
        if i < len(widths) - 1:
            parts.append(RqSpline())
        features = width
    return Flow(StandardNormal(features), Sequential(*parts))


def fmlp(dataset: Dataset = "mnist", *, levels: int | None = 256, **layer_kwargs: object) -> Flow:
    """FMLP (appendix figures 8 and 9): Flatten → Linear/RqSpline stack → latent 8 (MNIST) or 128."""
    d = _check_dataset("fmlp", dataset)
    return mlp_flow(IMAGE_SHAPES[d], _FMLP[d], levels=levels, **layer_kwargs)


def _conv_mlp(dataset: str, num_cifar_layers: int) -> list[int]:
    return _CONV_MLP[dataset] if dataset == "mnist" else [128] * num_cifar_layers


def fconv1(dataset: Dataset = "mnist", *, levels: int | None = 256, **layer_kwargs: object) -> Flow:
    """FCONV1, overlapping kernels (appendix figures 10 and 11)."""
    d = _check_dataset("fconv1", dataset)
    return image_flow(IMAGE_SHAPES[d], _FCONV1_CONVS[d], _conv_mlp(d, 10), levels=levels,
                      **layer_kwargs)


def fconv2(dataset: Dataset = "mnist", *, levels: int | None = 256, **layer_kwargs: object) -> Flow:
    """FCONV2, non-overlapping kernels 2×2 with stride 2 (official code)."""
    d = _check_dataset("fconv2", dataset)
    return image_flow(IMAGE_SHAPES[d], _FCONV2_CONVS[d], _conv_mlp(d, 12), levels=levels,
                      **layer_kwargs)


def _nsf_variant(table: dict, name: str, dataset: str, levels: int | None, kw: dict) -> Flow:
    d = _check_dataset(name, dataset)
    convs, couplings, plan = table[d]
    return image_flow(IMAGE_SHAPES[d], convs, [], levels=levels, couplings_after_conv=couplings,
                      dense_plan=plan, **kw)


def fconv1_nsf(dataset: Dataset = "mnist", *, levels: int | None = 256, **layer_kwargs: object) -> Flow:
    """FCONV1 + NSF coupling layers (appendix C)."""
    return _nsf_variant(_FCONV1_NSF, "fconv1_nsf", dataset, levels, layer_kwargs)


def fconv2_nsf(dataset: Dataset = "mnist", *, levels: int | None = 256, **layer_kwargs: object) -> Flow:
    """FCONV2 + NSF coupling layers (appendix C)."""
    return _nsf_variant(_FCONV2_NSF, "fconv2_nsf", dataset, levels, layer_kwargs)


def tabular_mlp(
    features: int,
    *,
    widths: Sequence[int] | None = None,
    dataset: str | None = None,
    negative_slope: float = 0.5,
    **layer_kwargs: object,
) -> Flow:
    """Flowified MLP for tabular data (appendix F): ``(Linear → LeakyReLU(0.5))*`` then Linear.

    ``widths`` defaults to ``[128, 64, 32, 16, 8]`` (``[128, 128, 128, 64, 32]`` for BSDS300).
    """
    if widths is None:
        widths = TABULAR_WIDTHS["bsds300" if dataset == "bsds300" else "default"]
    kwargs = {"inverse_density": "conditional", **layer_kwargs}
    parts: list[Transform] = []
    d = features
    for i, width in enumerate(widths):
        parts.append(Linear(d, width, **kwargs))
        if i < len(widths) - 1:
            parts.append(LeakyReLU(negative_slope))
        d = width
    return Flow(StandardNormal(d), Sequential(*parts))
