"""The paper's models (appendix figures 8–11, appendix C and F) as :class:`~survae_flowify.Flow`.

Sizes follow the appendix figures and the official code. In every model the dropped coordinates
of a reducing layer get a conditional normal (``inverse_density="conditional"``), augmenting noise
is normal, and each activation is one rational-quadratic spline (10 bins, linear tails, bound 2);
the tabular MLPs use Leaky ReLU with slope 0.5 (appendix F). Image models start with
``Dequantize(levels)``, so ``flow.log_prob`` takes integer-valued images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from survae_flowify.algebra import Flow, Sequential, Transform
from survae_flowify.distributions import StandardNormal
from survae_flowify.layers.linear import Linear
from survae_flowify.models.builders import ConvSpec, conv_output_size, image_flow, mlp_flow
from survae_flowify.transforms import LeakyReLU

__all__ = [  # ConvSpec, conv_output_size, image_flow, mlp_flow: re-exported from .builders
    "ConvSpec",
    "conv_output_size",
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
# "+NSF" variants (appendix C): convolutions with coupling stacks (num_couplings) in between; each
# stack is models.nsf.nsf_stack (native RqCoupling layers, 5 bins, bound 3, reversals between).
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


def _check_dataset(name: str, dataset: str) -> str:
    if dataset not in IMAGE_SHAPES:
        raise ValueError(f"{name}: dataset must be one of {sorted(IMAGE_SHAPES)}, got {dataset!r}")
    return dataset


def fmlp(dataset: Dataset = "mnist", *, levels: int | None = 256, **layer_kwargs: object) -> Flow:
    """FMLP (appendix figures 8 and 9): Flatten → Linear/RqSpline stack → latent 8 (MNIST) or 128.

    ``layer_kwargs`` go to every Linear; ``hidden`` (default 64) is the width of the conditional
    inverse densities' networks. The official code's FMLP-MNIST has 5.50 M parameters: with one
    hidden layer per density that is ``hidden=1635`` (1.48 M with the default).
    """
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
    """FCONV1 + NSF coupling layers (appendix C): stacks of native :class:`~survae_flowify.RqCoupling`
    layers (:func:`~survae_flowify.models.nsf.nsf_stack`) between the flowified layers; no nflows."""
    return _nsf_variant(_FCONV1_NSF, "fconv1_nsf", dataset, levels, layer_kwargs)


def fconv2_nsf(dataset: Dataset = "mnist", *, levels: int | None = 256, **layer_kwargs: object) -> Flow:
    """FCONV2 + NSF coupling layers (appendix C): stacks of native :class:`~survae_flowify.RqCoupling`
    layers (:func:`~survae_flowify.models.nsf.nsf_stack`) between the flowified layers; no nflows."""
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
