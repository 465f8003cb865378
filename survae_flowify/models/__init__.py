"""Ready-made flows: the paper's models and small ones for quick runs.

``build(name, data_shape, **kwargs)`` is the entry point used by the command line;
:func:`parameter_count` and :func:`paper_parameter_counts` report model sizes.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from survae_flowify.algebra import Flow
from survae_flowify.models.builders import OneHot, image_flow, mlp_flow
from survae_flowify.models.fconv_maf import fconv_maf
from survae_flowify.models.multiscale import multiscale
from survae_flowify.models.paper import (
    IMAGE_SHAPES,
    fconv1,
    fconv1_nsf,
    fconv2,
    fconv2_nsf,
    fmlp,
    tabular_mlp,
)
from survae_flowify.models.small import small_conv, small_mlp
from survae_flowify.models.survae import MAXPOOL_DEFAULTS, abs_flow, maxpool_flow

__all__ = [
    "MODEL_NAMES",
    "OneHot",
    "abs_flow",
    "build",
    "fconv1",
    "fconv1_nsf",
    "fconv2",
    "fconv2_nsf",
    "fconv_maf",
    "fmlp",
    "image_flow",
    "maxpool_flow",
    "mlp_flow",
    "multiscale",
    "paper_parameter_counts",
    "parameter_count",
    "small_conv",
    "small_mlp",
    "tabular_mlp",
]

_PAPER: dict[str, Callable[..., Flow]] = {
    "fmlp": fmlp, "fconv1": fconv1, "fconv2": fconv2, "fconv1-nsf": fconv1_nsf,
    "fconv2-nsf": fconv2_nsf,
}
MODEL_NAMES: tuple[str, ...] = (*_PAPER, "tabular-mlp", "small-mlp", "small-conv", "glow", "fconv-maf",
                                "survae-abs", "survae-maxpool")

# ``glow`` by image size (H, W): scales, steps per scale, coupling-network width. Sized so a
# training step stays within a few times that of the paper's models of the same data set.
_GLOW_DEFAULTS: dict[tuple[int, int], dict[str, int]] = {
    (8, 8): {"scales": 2, "steps": 4, "hidden": 64},      # digits
    (28, 28): {"scales": 2, "steps": 8, "hidden": 128},   # MNIST, Fashion-MNIST: 28 → 14 → 7
    (32, 32): {"scales": 3, "steps": 8, "hidden": 128},   # CIFAR-10
}


def _image_dataset(name: str, shape: tuple[int, ...]) -> str:
    for dataset, s in IMAGE_SHAPES.items():
        if tuple(shape) == s:
            return dataset
    raise ValueError(
        f"model {name!r} is defined for MNIST-shaped (1, 28, 28) and CIFAR-10-shaped (3, 32, 32) "
        f"data (Fashion-MNIST counts as MNIST); got data of shape {tuple(shape)}. "
        "Use 'small-mlp' or 'small-conv' for other shapes."
    )


def build(name: str, data_shape: tuple[int, ...], **kwargs: object) -> Flow:
    """Build model ``name`` (one of :data:`MODEL_NAMES`) for data of event shape ``data_shape``.

    Image models take ``levels=L`` (prepend ``Dequantize(L)``; ``None`` for continuous data);
    other keywords go to the layers (e.g. ``inverse_density``, ``noise``, ``rotation``, ``hidden``:
    the width of the conditional inverse densities' networks, 64 by default; ``hidden=1635`` gives
    FMLP-MNIST the official code's 5.50 M parameters). ``glow`` is :func:`multiscale` with
    defaults by image size (8×8: 2 scales of 4 steps; 28×28: 2 of 8; 32×32: 3 of 8).
    ``survae-abs`` is :func:`abs_flow` (vectors; ``abs=False``: the twin without ``Abs``),
    ``survae-maxpool`` is :func:`maxpool_flow` with defaults by image size (``pool="slice"``:
    the twin with ``Squeeze`` + ``Slice`` in place of ``MaxPool2d``).
    """
    data_shape = tuple(data_shape)
    if name in _PAPER:
        return _PAPER[name](_image_dataset(name, data_shape), **kwargs)
    if name == "tabular-mlp":
        if len(data_shape) != 1:
            raise ValueError(f"model 'tabular-mlp' needs vector data, got shape {data_shape}")
        kwargs.pop("levels", None)
        return tabular_mlp(data_shape[0], **kwargs)
    if name == "small-mlp":
        return small_mlp(data_shape, **kwargs)
    if name == "small-conv":
        if len(data_shape) != 3:
            raise ValueError(f"model 'small-conv' needs (C, H, W) images, got shape {data_shape}")
        return small_conv(data_shape, **kwargs)  # type: ignore[arg-type]
    if name == "glow":
        if len(data_shape) != 3:
            raise ValueError(f"model 'glow' needs (C, H, W) images, got shape {data_shape}")
        return multiscale(data_shape, **{**_GLOW_DEFAULTS.get(data_shape[1:], {}), **kwargs})  # type: ignore[arg-type]
    if name == "survae-abs":
        kwargs.pop("levels", None)  # continuous toy data; nothing to dequantize
        return abs_flow(data_shape, **kwargs)  # type: ignore[arg-type]
    if name == "survae-maxpool":
        if len(data_shape) != 3:
            raise ValueError(f"model 'survae-maxpool' needs (C, H, W) images, got shape {data_shape}")
        defaults = MAXPOOL_DEFAULTS.get(data_shape[1:], {})
        return maxpool_flow(data_shape, **{**defaults, **kwargs})  # type: ignore[arg-type]
    if name == "fconv-maf":
        if len(data_shape) != 3:
            raise ValueError(f"model 'fconv-maf' needs (C, H, W) images, got shape {data_shape}")
        return fconv_maf(data_shape, **kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")


def parameter_count(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def paper_parameter_counts() -> dict[str, int]:
    """Parameter counts of the paper's image models, keyed ``"<model>/<dataset>"``."""
    counts = {}
    for name in _PAPER:
        for dataset in IMAGE_SHAPES:
            counts[f"{name}/{dataset}"] = parameter_count(_PAPER[name](dataset))
    return counts
