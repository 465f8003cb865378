"""Converters for pooling: average pooling → :class:`~survae_flowify.layers.avgpool.AvgPool2d`
(an exact linear surjection), max pooling → ``survae_flowify.surjections.MaxPool2d``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from survae_flowify.algebra.sequential import Sequential
from survae_flowify.algebra.transform import Transform
from survae_flowify.conversion.registry import Call, EventShape, register_converter, register_function
from survae_flowify.layers.avgpool import AvgPool2d
from survae_flowify.transforms.structure import Flatten

__all__: list[str] = []


def _pair(value: object) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def _image(input_shape: EventShape, what: str) -> tuple[int, int, int]:
    if input_shape is None or len(input_shape) != 3:
        raise ValueError(f"{what} needs images (C, H, W); pass flowify(..., input_shape=(C, H, W)), got "
                         f"input_shape={input_shape}")
    return input_shape  # type: ignore[return-value]


def _avg_pool(kernel: object, stride: object, padding: object, divisor: object, input_shape: EventShape,
              ctx: dict[str, Any], what: str) -> AvgPool2d | None:
    k = _pair(kernel)
    if stride is not None and _pair(stride) != k:
        raise ValueError(f"stride={stride}: only non-overlapping pooling (stride = kernel_size) is an "
                         "exact linear surjection; use stride=kernel_size")
    if _pair(padding) != (0, 0):
        raise ValueError(f"padding={padding}: padded average pooling is not supported; use padding=0")
    if divisor is not None and divisor != k[0] * k[1]:
        raise ValueError(f"divisor_override={divisor}: use the mean (divisor_override=None)")
    c, h, w = _image(input_shape, what)
    if h % k[0] or w % k[1]:
        raise ValueError(f"a {h}×{w} image is not tiled by {k[0]}×{k[1]} patches: {what} would drop the "
                         "last rows/columns, which no flow can; crop or pad the input first")
    if k == (1, 1):
        return None
    return AvgPool2d(k, in_channels=c, **_pick(ctx, "inverse_density", "hidden"))


def _pick(ctx: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: ctx[n] for n in names if n in ctx}


def _nn_avg_pool(module: nn.AvgPool2d, *, input_shape: EventShape, **ctx: Any) -> AvgPool2d | None:
    return _avg_pool(module.kernel_size, module.stride, module.padding, module.divisor_override, input_shape,
                     ctx, "nn.AvgPool2d")


def _adaptive_kernel(output_size: object, input_shape: EventShape, what: str) -> tuple[int, int]:
    _, h, w = _image(input_shape, what)
    oh, ow = _pair(output_size)
    oh, ow = h if oh is None else oh, w if ow is None else ow
    if h % oh or w % ow:
        raise ValueError(f"output_size={output_size} does not divide the {h}×{w} image: the pooling windows "
                         "would overlap or differ in size; choose an output size that divides it")
    return h // oh, w // ow


def _nn_adaptive(module: nn.AdaptiveAvgPool2d, *, input_shape: EventShape, **ctx: Any) -> AvgPool2d | None:
    k = _adaptive_kernel(module.output_size, input_shape, "nn.AdaptiveAvgPool2d")
    return _avg_pool(k, k, 0, None, input_shape, ctx, "nn.AdaptiveAvgPool2d")


def _max_pool(kernel: object, stride: object, padding: object, dilation: object, ceil_mode: bool,
              return_indices: bool, input_shape: EventShape) -> Transform | None:
    k = _pair(kernel)
    if k[0] != k[1]:
        raise ValueError(f"kernel_size={kernel}: only square max pooling is supported")
    if stride is not None and _pair(stride) != k:
        raise ValueError(f"stride={stride}: only non-overlapping max pooling (stride = kernel_size) is "
                         "supported")
    if _pair(padding) != (0, 0) or _pair(dilation) != (1, 1) or return_indices:
        raise ValueError("only padding=0, dilation=1, return_indices=False are supported")
    if input_shape is not None and len(input_shape) == 3 and (input_shape[1] % k[0] or input_shape[2] % k[1]):
        raise ValueError(f"a {input_shape[1]}×{input_shape[2]} image is not tiled by {k[0]}×{k[1]} "
                         "patches: max pooling would drop the last rows/columns, which no flow can")
    from survae_flowify.surjections import MaxPool2d  # lazy: the surjections import the nets

    if k[0] == 1:
        return None
    channels = input_shape[0] if input_shape is not None else None
    return MaxPool2d(k[0], channels=channels)


def _nn_max_pool(module: nn.MaxPool2d, *, input_shape: EventShape, **ctx: Any) -> Transform | None:
    return _max_pool(module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode,
                     module.return_indices, input_shape)


register_converter(nn.AvgPool2d, _nn_avg_pool)
register_converter(nn.AdaptiveAvgPool2d, _nn_adaptive)
register_converter(nn.MaxPool2d, _nn_max_pool)


def _call_avg_pool(call: Call, ctx: dict[str, Any]) -> AvgPool2d | None:
    return _avg_pool(call.arg(0, "kernel_size", None), call.arg(1, "stride", None), call.arg(2, "padding", 0),
                     call.arg(5, "divisor_override", None), call.in_shape, ctx, "F.avg_pool2d")


def _call_adaptive(call: Call, ctx: dict[str, Any]) -> AvgPool2d | None:
    k = _adaptive_kernel(call.arg(0, "output_size", None), call.in_shape, "F.adaptive_avg_pool2d")
    return _avg_pool(k, k, 0, None, call.in_shape, ctx, "F.adaptive_avg_pool2d")


def _call_max_pool(call: Call, ctx: dict[str, Any]) -> Transform | None:
    return _max_pool(call.arg(0, "kernel_size", None), call.arg(1, "stride", None), call.arg(2, "padding", 0),
                     call.arg(3, "dilation", 1), call.arg(4, "ceil_mode", False),
                     call.arg(5, "return_indices", False), call.in_shape)


def _call_mean(call: Call, ctx: dict[str, Any]) -> Transform | None:
    """``x.mean((2, 3))`` / ``torch.mean(x, (-2, -1))``: global average pooling (then flattened)."""
    dims = call.arg(0, "dim", None)
    c, h, w = _image(call.in_shape, "a spatial mean")
    dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
    if sorted(d % 4 for d in dims) != [2, 3]:
        raise ValueError(f"mean over dim={dims}: only the spatial mean of images (dim=(2, 3)) is an exact "
                         "surjection here")
    pool = _avg_pool((h, w), (h, w), 0, None, call.in_shape, ctx, "a spatial mean")
    if call.arg(1, "keepdim", False):
        return pool
    flatten = Flatten((c, 1, 1))
    return flatten if pool is None else Sequential(pool=pool, flatten=flatten)


register_function((F.avg_pool2d,), _call_avg_pool)
register_function((F.adaptive_avg_pool2d,), _call_adaptive)
register_function((F.max_pool2d, torch.max_pool2d), _call_max_pool)
register_function((torch.mean, "mean"), _call_mean)
