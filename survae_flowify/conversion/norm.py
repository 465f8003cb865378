"""Converter for ``nn.BatchNorm1d/2d``: the per-channel affine map of its eval-mode statistics."""

from __future__ import annotations

from typing import Any

from torch import nn

from survae_flowify.bijections.elementwise import ElementwiseAffine
from survae_flowify.conversion.registry import EventShape, register_converter

__all__: list[str] = []


def _batch_norm(module: nn.modules.batchnorm._BatchNorm, *, keep_weights: bool, input_shape: EventShape,
                **ctx: Any) -> ElementwiseAffine:
    if input_shape is not None and input_shape[0] != module.num_features:
        raise ValueError(f"{module} normalises {module.num_features} channels but receives inputs of "
                         f"shape {input_shape}")
    if keep_weights:
        return ElementwiseAffine.from_batch_norm(module, input_shape)
    if module.running_mean is None:
        raise ValueError(f"{module} has track_running_stats=False: it normalises with each batch's own "
                         "statistics, not a fixed invertible map")
    shape = input_shape or ((module.num_features,) if isinstance(module, nn.BatchNorm1d)
                            else (module.num_features, None, None))
    return ElementwiseAffine(shape).to(module.running_mean.device, module.running_mean.dtype)


register_converter(nn.BatchNorm1d, _batch_norm)
register_converter(nn.BatchNorm2d, _batch_norm)
