"""Converters for the invertible activations, as modules and as traced calls.

``nn.LeakyReLU``/``F.leaky_relu`` (slope > 0), ``nn.ELU``/``F.elu`` (α > 0), ``nn.Tanh``/
``torch.tanh``, ``nn.Sigmoid``/``torch.sigmoid``, ``nn.Softplus``/``F.softplus``; the
non-injective ones (``ReLU``, ``GELU``, ``SiLU``, ``softmax``) are refused with the alternative.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from survae_flowify.conversion.registry import Call, refuse_function, register_converter, register_function
from survae_flowify.transforms.activations import ELU, LeakyReLU, Sigmoid, Softplus, Tanh

__all__: list[str] = []

_USE_LEAKY = "use nn.LeakyReLU / F.leaky_relu with negative_slope > 0 (the paper uses 0.5) or ffn.RqSpline"


def _leaky(slope: float) -> LeakyReLU:
    if slope <= 0:
        raise ValueError(f"negative_slope={slope} is not injective; use "
                         "nn.LeakyReLU(negative_slope>0) (the paper uses 0.5) or ffn.RqSpline")
    return LeakyReLU(slope)


def _elu(alpha: float) -> ELU:
    if alpha <= 0:
        raise ValueError(f"alpha={alpha} is not injective; use nn.ELU(alpha>0)")
    return ELU(alpha)


def _softplus(beta: float, threshold: float) -> Softplus:
    # torch returns x where βx > threshold; the flowified map is softplus everywhere, which
    # differs there by less than exp(−threshold)/β: refuse thresholds that make it visible.
    if threshold < 15:
        raise ValueError(f"threshold={threshold}: below 15 torch's linear shortcut differs from softplus by "
                         "more than float precision (and makes the map non-smooth); use the default 20")
    return Softplus(beta)


register_converter(nn.LeakyReLU, lambda m, **ctx: _leaky(m.negative_slope))
register_converter(nn.ELU, lambda m, **ctx: _elu(m.alpha))
register_converter(nn.Tanh, lambda m, **ctx: Tanh())
register_converter(nn.Sigmoid, lambda m, **ctx: Sigmoid())
register_converter(nn.Softplus, lambda m, **ctx: _softplus(m.beta, m.threshold))


def _call_leaky(call: Call, ctx: dict[str, Any]) -> LeakyReLU:
    return _leaky(call.arg(0, "negative_slope", 0.01))


def _call_elu(call: Call, ctx: dict[str, Any]) -> ELU:
    return _elu(call.arg(0, "alpha", 1.0))


def _call_softplus(call: Call, ctx: dict[str, Any]) -> Softplus:
    return _softplus(call.arg(0, "beta", 1.0), call.arg(1, "threshold", 20.0))


register_function((F.leaky_relu, F.leaky_relu_, "leaky_relu"), _call_leaky)
register_function((F.elu, F.elu_, "elu"), _call_elu)
register_function((torch.tanh, F.tanh, "tanh", "tanh_"), lambda call, ctx: Tanh())
register_function((torch.sigmoid, F.sigmoid, "sigmoid", "sigmoid_"), lambda call, ctx: Sigmoid())
register_function((F.softplus,), _call_softplus)

refuse_function((F.relu, F.relu_, torch.relu, torch.relu_, "relu", "relu_", F.relu6, F.hardtanh, F.gelu,
                 F.silu, F.mish, F.hardswish, F.prelu), f"not injective; {_USE_LEAKY}")
refuse_function((F.softmax, torch.softmax, "softmax", F.log_softmax, torch.log_softmax, "log_softmax"),
                "not injective (adding a constant to every logit leaves it unchanged); leave it out of the "
                "flowified network")
refuse_function((torch.abs, "abs", "abs_", torch.square, "square", "pow", torch.pow),
                "not injective (x and −x give the same value); ffn.RqSpline or nn.LeakyReLU are invertible")
