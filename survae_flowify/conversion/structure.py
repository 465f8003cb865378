"""Converters for shape-only layers and calls (``Flatten``, ``view``, ``reshape``, …) and for the
layers that are the identity in eval mode (``Dropout``)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from survae_flowify.algebra.transform import Transform
from survae_flowify.conversion.registry import Call, EventShape, register_converter, register_function
from survae_flowify.transforms.structure import Flatten, Reshape

__all__: list[str] = []


def reshape_layer(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Transform | None:
    """The bijection that turns events of ``in_shape`` into ``out_shape`` (``None``: unchanged)."""
    if tuple(in_shape) == tuple(out_shape):
        return None
    if len(out_shape) == 1 and out_shape[0] == math.prod(in_shape):
        return Flatten(tuple(in_shape))
    return Reshape(tuple(in_shape), tuple(out_shape))


def _flatten(module: nn.Flatten, *, input_shape: EventShape, **ctx: Any) -> Transform | None:
    if module.start_dim == 1 and module.end_dim == -1:
        return Flatten(input_shape)
    if input_shape is None or module.start_dim % (len(input_shape) + 1) == 0:
        raise ValueError(f"only nn.Flatten(start_dim=1, end_dim=-1) is supported without input_shape, and "
                         f"never one that merges the batch dimension; got start_dim={module.start_dim}, "
                         f"end_dim={module.end_dim}")
    out = torch.empty(1, *input_shape, device="meta").flatten(module.start_dim, module.end_dim).shape[1:]
    return reshape_layer(input_shape, tuple(out))


def _unflatten(module: nn.Unflatten, *, input_shape: EventShape, **ctx: Any) -> Transform | None:
    if input_shape is None:
        raise ValueError("nn.Unflatten needs the shape of its input; pass flowify(..., input_shape=...)")
    out = nn.Unflatten(module.dim, module.unflattened_size)(torch.empty(1, *input_shape, device="meta"))
    if out.shape[0] != 1:
        raise ValueError(f"dim={module.dim} unflattens the batch dimension")
    return reshape_layer(input_shape, tuple(out.shape[1:]))


def _dropped(module: nn.Module, **ctx: Any) -> None:
    return None  # random in training, the identity in eval: the flow keeps the eval function


register_converter(nn.Flatten, _flatten)
register_converter(nn.Unflatten, _unflatten)
for _dropout in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout):
    register_converter(_dropout, _dropped)


def _call_reshape(call: Call, ctx: dict[str, Any]) -> Transform | None:
    """``view``/``reshape``/``flatten``/``squeeze``/…: the shapes measured on the network decide.

    The network ran once on a batch of 3 (see :mod:`survae_flowify.conversion.tracing`): a call
    whose output does not keep that batch size merges or splits the batch, which no flow can."""
    if math.prod(call.in_shape) != math.prod(call.out_shape):
        raise ValueError(f"{call.what} changes the batch dimension or the number of entries per sample "
                         f"({call.in_shape} → {call.out_shape}); a flow must keep both")
    return reshape_layer(call.in_shape, call.out_shape)


register_function((torch.flatten, "flatten", "view", "reshape", torch.reshape, "squeeze", torch.squeeze,
                   "unsqueeze", torch.unsqueeze, "unflatten", torch.unflatten),
                  _call_reshape)
register_function(("contiguous", F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout, "clone"),
                  lambda call, ctx: None)
