"""Converters for ``nn.Linear`` and ``nn.Conv2d`` (weights kept through the SVD of their weight)."""

from __future__ import annotations

from typing import Any

from torch import nn

from survae_flowify.algebra.transform import Transform
from survae_flowify.conversion.registry import EventShape, register_converter
from survae_flowify.layers.linear import Linear

__all__: list[str] = []


def _linear(module: nn.Linear, *, keep_weights: bool, input_shape: EventShape, **kwargs: Any) -> Linear:
    if keep_weights:
        return Linear.from_linear(module, **kwargs)
    layer = Linear(module.in_features, module.out_features, bias=module.bias is not None, **kwargs)
    return layer.to(module.weight.device, module.weight.dtype)


def _border(conv: nn.Conv2d, input_shape: EventShape) -> tuple[int, int, int, int]:
    """``nn.Conv2d``'s zero border ``(l, r, t, b)``, less the rows/columns it never reads.

    When ``(t + H + b − k) % s = ρ > 0`` the convolution ignores the last ``ρ`` rows of the
    padded image; if they are all border (``ρ ≤ b``) the flowified border leaves them out, so
    the flowified convolution tiles the image and gives ``nn.Conv2d``'s output size. (If real
    pixels are ignored, ``ρ > b``, a flow cannot drop them: the flowified convolution pads the
    image to tile it instead, and the shape check that follows reports the larger output.)
    """
    from survae_flowify.layers.conv import conv_padding  # lazy: conv imports Linear

    left, right, top, bottom = conv_padding(conv)
    if input_shape is None or len(input_shape) != 3:
        return left, right, top, bottom
    k, s = conv.kernel_size[0], conv.stride[0]
    rows = (top + input_shape[1] + bottom - k) % s
    cols = (left + input_shape[2] + right - k) % s
    if 0 < rows <= bottom:
        bottom -= rows
    if 0 < cols <= right:
        right -= cols
    return left, right, top, bottom


def _conv2d(module: nn.Conv2d, *, keep_weights: bool, input_shape: EventShape, **kwargs: Any) -> Transform:
    from survae_flowify.layers.conv import Conv2d, check_plain_conv  # lazy: conv imports Linear

    check_plain_conv(module)
    if input_shape is not None and len(input_shape) == 3 and "image_size" not in kwargs:
        kwargs["image_size"] = tuple(input_shape[1:])
    kwargs.setdefault("padding", _border(module, input_shape))
    if keep_weights:
        return Conv2d.from_conv2d(module, **kwargs)
    fresh = Conv2d(module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
                   bias=module.bias is not None, **kwargs)
    return fresh.to(module.weight.device, module.weight.dtype)


register_converter(nn.Linear, _linear)
register_converter(nn.Conv2d, _conv2d)
