"""Generic builders of flowified networks: conv nets and MLPs as :class:`~survae_flowify.Flow`.

The paper's models (:mod:`survae_flowify.models.paper`) and the small ones
(:mod:`survae_flowify.models.small`) are tables of sizes fed to these. Every reducing layer gets a
conditional inverse density by default (``inverse_density="conditional"``, as in the paper) and
every activation is one rational-quadratic spline (10 bins, linear tails, bound 2).

``context_features=k`` makes a builder's flow conditional on a context ``(B, k)``: the base is
:class:`~survae_flowify.ConditionalNormal` and every reducing layer with a conditional inverse
density sees the context too. ``embedding`` (e.g. :class:`OneHot` for class labels) maps the raw
context to those ``k`` features once per call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from survae_flowify import _checks, _state
from survae_flowify.algebra import Flow, Sequential, Transform
from survae_flowify.distributions import ConditionalNormal, StandardNormal
from survae_flowify.layers.conv import Conv2d
from survae_flowify.layers.linear import Linear
from survae_flowify.models.nsf import nsf_stack
from survae_flowify.transforms import Dequantize, Flatten, RqSpline

__all__ = ["ConvSpec", "OneHot", "conv_output_size", "image_flow", "mlp_flow"]

ConvSpec = tuple[int, int, int]  # (out_channels, kernel_size, stride)


class OneHot(nn.Module):
    r"""Class labels to one-hot vectors: ``y ∈ {0, …, K−1}`` of shape ``(B,)`` ↦ ``e_y`` of shape
    ``(B, K)``, in the module's floating dtype and on its device (they follow ``.to()``).

    The embedding of a class-conditional flow: ``Flow(base, transform, embedding=OneHot(K))``
    takes the labels themselves as its context. With the input checks on
    (:func:`survae_flowify.validation`), labels that are not integers of shape ``(B,)`` in
    ``0 … K−1`` raise a ``ValueError``; the check is skipped with them off (training steps).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = _checks.positive_int("OneHot", "num_classes", num_classes)
        # carries dtype and device only; not saved, so checkpoints hold no extra entry
        self.register_buffer("_like", torch.zeros(()), persistent=False)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"

    def forward(self, labels: Tensor) -> Tensor:
        if _state.validation_enabled():
            self._check(labels)
        return F.one_hot(labels.long(), self.num_classes).to(self._like)

    def _check(self, labels: object) -> None:
        k = self.num_classes
        if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex() \
                or labels.dim() != 1:
            got = (f"{labels.dtype} of shape {tuple(labels.shape)}" if isinstance(labels, Tensor)
                   else type(labels).__name__)
            raise ValueError(f"OneHot({k}): expected integer class labels of shape (B,), got {got}")
        if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < k):
            raise ValueError(f"OneHot({k}): labels must lie in 0 … {k - 1}, got "
                             f"{int(labels.min())} … {int(labels.max())}")


def _base(features: int, context_features: int | None) -> nn.Module:
    return StandardNormal(features) if context_features is None else ConditionalNormal(
        features, context_features)


def _conditional(kwargs: dict, reducing: bool, context_features: int | None) -> dict:
    """The layer keywords, with ``context_features`` for a reducing layer whose inverse density
    is conditional (the only layers that can use a context)."""
    if context_features is None or not reducing or kwargs.get("inverse_density") != "conditional":
        return kwargs
    return {**kwargs, "context_features": context_features}


def conv_output_size(size: int, kernel_size: int, stride: int) -> int:
    """Spatial size after ``Conv2d``: pad so the kernel tiles, then ``(H + p − k)/s + 1``."""
    pad = (-(size - kernel_size)) % stride
    return (size + pad - kernel_size) // stride + 1


def image_flow(
    shape: tuple[int, int, int],
    convs: Sequence[ConvSpec],
    widths: Sequence[int],
    *,
    levels: int | None = 256,
    couplings_after_conv: Sequence[int] | None = None,
    dense_plan: Sequence[tuple[int | None, int]] | None = None,
    final_spline: bool = True,
    context_features: int | None = None,
    embedding: nn.Module | None = None,
    **layer_kwargs: object,
) -> Flow:
    """A flowified conv net: ``[Dequantize] → (Conv2d → RqSpline)* → Flatten → (Linear → RqSpline)*``.

    ``convs``: ``(out_channels, kernel_size, stride)`` per convolution. ``widths``: output sizes of
    the Linear layers after flattening. ``couplings_after_conv[i] > 0`` inserts an NSF coupling
    stack after convolution ``i``; ``dense_plan`` (``(width or None, couplings)``) replaces
    ``widths`` for the "+NSF" variants: an optional Linear to ``width`` then a coupling stack.
    ``layer_kwargs`` go to every Linear and Conv2d (e.g. ``inverse_density``, ``noise``, ``hidden``:
    the width of the conditional inverse densities' networks, default 64), except ``density_net``
    and ``hidden=None``, which go to the convolutions only (their density network and its width
    rule, :class:`~survae_flowify.PatchLinear`; ``density_net="3x3-3x3"`` gives the networks of
    the models before 2026-12). ``context_features``, ``embedding``: a conditional
    flow (module docstring).
    """
    kwargs = {"inverse_density": "conditional", **layer_kwargs}
    conv_only = {"density_net": kwargs.pop("density_net")} if "density_net" in kwargs else {}
    if "hidden" in kwargs and kwargs["hidden"] is None:  # the width rule of the convolutions only
        conv_only["hidden"] = kwargs.pop("hidden")
    parts: list[Transform] = [Dequantize(levels)] if levels else []
    c, h, w = shape
    for i, (out_c, k, s) in enumerate(convs):
        conv_kwargs = _conditional(kwargs, c * k * k > out_c, context_features)
        parts += [Conv2d(c, out_c, k, s, image_size=(h, w), **conv_kwargs, **conv_only), RqSpline()]
        c, h, w = out_c, conv_output_size(h, k, s), conv_output_size(w, k, s)
        if couplings_after_conv and couplings_after_conv[i]:
            parts.append(nsf_stack((c, h, w), couplings_after_conv[i]))
    parts.append(Flatten((c, h, w)))
    features = c * h * w
    if dense_plan is not None:
        for width, couplings in dense_plan:
            if width is not None:
                linear_kwargs = _conditional(kwargs, features > width, context_features)
                parts += [Linear(features, width, **linear_kwargs), RqSpline()]
                features = width
            parts.append(nsf_stack((features,), couplings))
    else:
        for i, width in enumerate(widths):
            parts.append(Linear(features, width, **_conditional(kwargs, features > width,
                                                                context_features)))
            if final_spline or i < len(widths) - 1:
                parts.append(RqSpline())
            features = width
    return Flow(_base(features, context_features), Sequential(*parts), embedding)


def mlp_flow(
    shape: tuple[int, ...],
    widths: Sequence[int],
    *,
    levels: int | None = None,
    context_features: int | None = None,
    embedding: nn.Module | None = None,
    **layer_kwargs: object,
) -> Flow:
    """``[Dequantize] → [Flatten] → (Linear → RqSpline)*`` ending in a Linear to ``widths[-1]``.

    ``layer_kwargs`` go to every Linear (e.g. ``inverse_density``, ``noise``, ``hidden``).
    ``context_features``, ``embedding``: a conditional flow (module docstring).
    """
    kwargs = {"inverse_density": "conditional", **layer_kwargs}
    parts: list[Transform] = [Dequantize(levels)] if levels else []
    if len(shape) > 1:
        parts.append(Flatten(tuple(shape)))
    features = math.prod(shape)
    for i, width in enumerate(widths):
        parts.append(Linear(features, width, **_conditional(kwargs, features > width, context_features)))
        if i < len(widths) - 1:
            parts.append(RqSpline())
        features = width
    return Flow(_base(features, context_features), Sequential(*parts), embedding)
