r"""``flowify(module)``: turn an ordinary ``torch.nn`` network into a flowified one (DESIGN.md §3).

Supported layers (nested ``nn.Sequential`` too):

==================  =====================================================================
``nn.Linear``       :class:`~survae_flowify.layers.linear.Linear` (weights kept via SVD)
``nn.Conv2d``       :class:`~survae_flowify.layers.conv.Conv2d` (no padding, dilation 1,
                    one group, square kernel and stride, ``stride ≤ kernel_size``)
``nn.LeakyReLU``    :class:`~survae_flowify.transforms.LeakyReLU` (``negative_slope > 0``)
``nn.Flatten``      :class:`~survae_flowify.transforms.Flatten` (``start_dim=1, end_dim=-1``)
``nn.Identity``     dropped
a flowified layer   kept as it is
==================  =====================================================================

``register_converter(nn_type, fn)`` adds a layer type: ``fn(module, **ctx)`` returns a
:class:`~survae_flowify.algebra.transform.Transform`, where ``ctx`` holds ``keep_weights``,
``input_shape`` (the event shape reaching the layer, or ``None`` when unknown) and the
``layer_kwargs`` given to :func:`flowify`.

With ``keep_weights=True``, under :func:`survae_flowify.noise_off` the flowified network computes
the same function as the original, provided no convolution needs padding (a flowified
convolution pads the image so that its kernel tiles it, which enlarges the output map).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from survae_flowify import _checks
from survae_flowify.algebra.sequential import Sequential
from survae_flowify.algebra.transform import Transform
from survae_flowify.layers.linear import Linear
from survae_flowify.transforms.activations import LeakyReLU
from survae_flowify.transforms.structure import Flatten

__all__ = ["flowify", "register_converter"]

Converter = Callable[..., Transform]
EventShape = tuple[int, ...] | None

_CONVERTERS: dict[type[nn.Module], Converter] = {}

_NOT_INVERTIBLE: dict[type[nn.Module], str] = {
    nn.ReLU: "not injective; use nn.LeakyReLU(negative_slope>0) or ffn.RqSpline",
    nn.ReLU6: "not injective; use nn.LeakyReLU(negative_slope>0) or ffn.RqSpline",
    nn.GELU: "not injective; use nn.LeakyReLU(negative_slope>0) or ffn.RqSpline",
    nn.SiLU: "not injective; use nn.LeakyReLU(negative_slope>0) or ffn.RqSpline",
    nn.Tanh: "a bijection onto (−1, 1) that is not flowified here; use ffn.RqSpline (linear "
             "tails) or nn.LeakyReLU(negative_slope>0)",
    nn.Sigmoid: "a bijection onto (0, 1) that is not flowified here; use ffn.RqSpline (linear "
                "tails) or nn.LeakyReLU(negative_slope>0)",
    nn.MaxPool2d: "not injective; use a strided nn.Conv2d (e.g. kernel_size=2, stride=2)",
    nn.AvgPool2d: "not injective; use a strided nn.Conv2d (e.g. kernel_size=2, stride=2)",
    nn.Dropout: "random in training and the identity in eval; remove it (or register a "
                "converter that returns ffn.Sequential())",
}


def register_converter(nn_type: type[nn.Module], fn: Converter) -> None:
    """Make :func:`flowify` convert modules of ``nn_type`` (and subclasses) with ``fn``.

    ``fn(module, **ctx) -> Transform`` with ``ctx = {"keep_weights": bool, "input_shape":
    tuple | None, **layer_kwargs}``. A later registration for the same type replaces the earlier.
    """
    if not (isinstance(nn_type, type) and issubclass(nn_type, nn.Module)):
        raise TypeError(f"register_converter: nn_type must be a torch.nn.Module subclass, got {nn_type!r}")
    if not callable(fn):
        raise TypeError(f"register_converter: fn must be callable, got {type(fn).__name__}")
    _CONVERTERS[nn_type] = fn


def flowify(
    module: nn.Module,
    *,
    keep_weights: bool = True,
    input_shape: int | tuple[int, ...] | None = None,
    **layer_kwargs: Any,
) -> Sequential:
    """Convert ``module`` (an ``nn.Sequential``, nested or not, or a single layer) to a flow.

    Args:
        module: the network.
        keep_weights: copy the trained weights (``nn.Linear`` and ``nn.Conv2d`` through the SVD
            of their weight); otherwise fresh flowified layers of the same sizes.
        input_shape: the event shape of one input, e.g. ``(1, 28, 28)``. Propagated through the
            layers, it gives ``Flatten`` the shape it needs to invert and convolutions the image
            size they need when ``stride > 1``, and checks that the layers fit together.
        layer_kwargs: passed to every flowified ``Linear`` and ``Conv2d`` (``inverse_density``,
            ``noise``, ``rotation``, ...).

    Returns an :class:`~survae_flowify.algebra.sequential.Sequential` whose parts keep the
    network's names (``nn.Identity`` layers are dropped, so numbers may skip); nested
    ``nn.Sequential`` become nested ones. Raises ``ValueError`` naming the layer (its path, e.g.
    ``'2.1'``) that cannot be converted, with the invertible alternative when there is one.
    """
    shape = None if input_shape is None else _checks.shape("flowify", "input_shape", input_shape)
    ctx = {"keep_weights": _checks.boolean("flowify", "keep_weights", keep_weights), **layer_kwargs}
    if isinstance(module, nn.Sequential):
        converted, _ = _convert_sequential(module, "", shape, ctx)
        return converted
    part, _ = _convert(module, "0", shape, ctx)
    return Sequential() if part is None else Sequential(part)


def _convert_sequential(
    module: nn.Sequential, prefix: str, shape: EventShape, ctx: dict[str, Any]
) -> tuple[Sequential, EventShape]:
    parts: dict[str, Transform] = {}
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        part, shape = _convert(child, path, shape, ctx)
        if part is not None:
            parts[name] = part
    # The network's own names (numbers or an OrderedDict's keys) name the flowified parts, so
    # breakdown rows and state_dict keys match the original network.
    return Sequential(parts), shape


def _convert(
    module: nn.Module, path: str, shape: EventShape, ctx: dict[str, Any]
) -> tuple[Transform | None, EventShape]:
    """One layer: the flowified transform (``None`` to drop it) and the event shape after it."""
    if isinstance(module, Transform):
        _check_fits(module, path, shape)
        return module, _shape_after(module, shape)
    if isinstance(module, nn.Sequential):
        return _convert_sequential(module, path, shape, ctx)
    if isinstance(module, nn.Identity):
        return None, shape
    converter = _find(module)
    if converter is None:
        raise ValueError(f"flowify: cannot convert layer '{path}' ({module}): {_advice(module)}")
    try:
        part = converter(module, input_shape=shape, **ctx)
    except (ValueError, TypeError) as err:
        raise ValueError(f"flowify: cannot convert layer '{path}' ({module}): {err}") from err
    if not isinstance(part, Transform):
        raise TypeError(f"flowify: the converter for {type(module).__name__} returned "
                        f"{type(part).__name__}, expected a survae_flowify Transform")
    _check_fits(part, path, shape)
    return part, _shape_after(part, shape)


def _find(module: nn.Module) -> Converter | None:
    for cls in type(module).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls]
    return None


def _advice(module: nn.Module) -> str:
    for cls in type(module).__mro__:
        if cls in _NOT_INVERTIBLE:
            return f"{cls.__name__} is {_NOT_INVERTIBLE[cls]}"
    return (f"no converter for {type(module).__name__}; register one with "
            "survae_flowify.register_converter(type, fn)")


def _check_fits(part: Transform, path: str, shape: EventShape) -> None:
    expected = part.in_shape
    if shape is None or expected is None:
        return
    if len(expected) != len(shape) or any(e is not None and e != s for e, s in zip(expected, shape)):
        raise ValueError(
            f"flowify: layer '{path}' ({type(part).__name__}) expects inputs of shape {expected} "
            f"but receives {shape} (a flowified Conv2d pads the image so that its kernel tiles "
            "it, which can enlarge the output map)"
        )


def _shape_after(part: Transform, shape: EventShape) -> EventShape:
    out = part.out_shape
    if out is None:
        # A layer that accepts any shape and declares none keeps it (elementwise activations).
        return shape if part.in_shape is None else None
    return None if None in out else tuple(out)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- built-in converters
def _linear(module: nn.Linear, *, keep_weights: bool, input_shape: EventShape, **kwargs: Any) -> Linear:
    if keep_weights:
        return Linear.from_linear(module, **kwargs)
    layer = Linear(module.in_features, module.out_features, bias=module.bias is not None, **kwargs)
    return layer.to(module.weight.device, module.weight.dtype)


def _conv2d(module: nn.Conv2d, *, keep_weights: bool, input_shape: EventShape, **kwargs: Any) -> Transform:
    from survae_flowify.layers.conv import Conv2d, check_plain_conv  # lazy: conv imports Linear

    if input_shape is not None and len(input_shape) == 3 and "image_size" not in kwargs:
        kwargs["image_size"] = tuple(input_shape[1:])
    if keep_weights:
        return Conv2d.from_conv2d(module, **kwargs)
    check_plain_conv(module)
    fresh = Conv2d(module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
                   bias=module.bias is not None, **kwargs)
    return fresh.to(module.weight.device, module.weight.dtype)


def _leaky_relu(module: nn.LeakyReLU, **ctx: Any) -> LeakyReLU:
    if module.negative_slope <= 0:
        raise ValueError(f"negative_slope={module.negative_slope} is not injective; use "
                         "nn.LeakyReLU(negative_slope>0) (the paper uses 0.5) or ffn.RqSpline")
    return LeakyReLU(module.negative_slope)


def _flatten(module: nn.Flatten, *, input_shape: EventShape, **ctx: Any) -> Flatten:
    if module.start_dim != 1 or module.end_dim != -1:
        raise ValueError(f"only nn.Flatten(start_dim=1, end_dim=-1) is supported, got "
                         f"start_dim={module.start_dim}, end_dim={module.end_dim}")
    return Flatten(input_shape)


register_converter(nn.Linear, _linear)
register_converter(nn.Conv2d, _conv2d)
register_converter(nn.LeakyReLU, _leaky_relu)
register_converter(nn.Flatten, _flatten)
