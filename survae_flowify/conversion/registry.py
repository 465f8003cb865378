"""The converter registries: torch.nn module types and traced functions/methods → flowified layers.

A *module converter* ``fn(module, **ctx) -> Transform | None`` is registered per ``nn.Module``
type (subclasses inherit it); ``ctx`` holds ``keep_weights``, ``input_shape`` (the event shape
reaching the layer, or ``None`` when unknown) and the ``layer_kwargs`` given to
:func:`~survae_flowify.flowify`. ``None`` means the identity (the layer is dropped).

A *function converter* (internal) turns a ``call_function``/``call_method`` node of a traced
graph, such as ``F.leaky_relu(x, 0.2)`` or ``x.flatten(1)``, into a layer:
``fn(call, ctx) -> Transform | None`` with a :class:`Call` describing the node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from survae_flowify.algebra.transform import Transform

__all__ = [
    "Call",
    "Converter",
    "EventShape",
    "FunctionConverter",
    "find_converter",
    "module_advice",
    "refuse_function",
    "register_converter",
    "register_function",
]

Converter = Callable[..., Transform | None]
EventShape = tuple[int, ...] | None

_CONVERTERS: dict[type[nn.Module], Converter] = {}

_NOT_INJECTIVE = "not injective; use nn.LeakyReLU(negative_slope>0) (the paper uses 0.5) or ffn.RqSpline"

# Layer types that have no flowified form, and why; the error names the invertible alternative.
_NOT_INVERTIBLE: dict[type[nn.Module], str] = {
    nn.ReLU: _NOT_INJECTIVE,
    nn.ReLU6: _NOT_INJECTIVE,
    nn.GELU: _NOT_INJECTIVE,
    nn.SiLU: _NOT_INJECTIVE,
    nn.Mish: _NOT_INJECTIVE,
    nn.Hardtanh: _NOT_INJECTIVE,
    nn.Hardswish: _NOT_INJECTIVE,
    nn.PReLU: "a LeakyReLU whose slope is learned and may reach 0; use nn.LeakyReLU(negative_slope>0)",
    nn.Softmax: "not injective (adding a constant to every logit leaves it unchanged); leave it out of "
                "the flowified network (it maps onto the simplex, a set of measure zero)",
    nn.LogSoftmax: "not injective (adding a constant to every logit leaves it unchanged); leave it out of "
                   "the flowified network",
    nn.Upsample: "an injective copy with no noise; use a generative surjection (ffn.Repeat) instead",
}


def register_converter(nn_type: type[nn.Module], fn: Converter) -> None:
    """Make :func:`~survae_flowify.flowify` convert modules of ``nn_type`` (and subclasses) with ``fn``.

    ``fn(module, **ctx) -> Transform`` (or ``None`` for the identity) with ``ctx = {"keep_weights":
    bool, "input_shape": tuple | None, **layer_kwargs}``. A registered type is never traced: its
    converter replaces the module as a whole, which is how a module whose ``forward`` torch.fx
    cannot trace (data-dependent control flow) is flowified. A later registration for the same
    type replaces the earlier.
    """
    if not (isinstance(nn_type, type) and issubclass(nn_type, nn.Module)):
        raise TypeError(f"register_converter: nn_type must be a torch.nn.Module subclass, got {nn_type!r}")
    if not callable(fn):
        raise TypeError(f"register_converter: fn must be callable, got {type(fn).__name__}")
    _CONVERTERS[nn_type] = fn


def find_converter(module: nn.Module) -> Converter | None:
    """The converter registered for the nearest class of ``module`` (its MRO), if any."""
    for cls in type(module).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls]
    return None


def module_advice(module: nn.Module) -> str:
    """Why ``module`` has no converter, and what to do instead."""
    for cls in type(module).__mro__:
        if cls in _NOT_INVERTIBLE:
            return f"{cls.__name__} is {_NOT_INVERTIBLE[cls]}"
    return (f"no converter for {type(module).__name__}; register one with "
            "survae_flowify.register_converter(type, fn)")


@dataclass(frozen=True)
class Call:
    """A traced ``call_function``/``call_method`` node: the arguments after its tensor input.

    ``in_shape``/``out_shape`` are the event shapes (batch dimension removed) that the original
    network has before and after the call, measured by running it once.
    """

    what: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    in_shape: tuple[int, ...] = ()
    out_shape: tuple[int, ...] = ()

    def arg(self, index: int, name: str, default: Any) -> Any:
        """The argument at ``index`` (after the tensor) or named ``name``, else ``default``."""
        if index < len(self.args):
            return self.args[index]
        return self.kwargs.get(name, default)


FunctionConverter = Callable[[Call, dict[str, Any]], Transform | None]
_FUNCTIONS: dict[Any, FunctionConverter] = {}
_REFUSED: dict[Any, str] = {}


def register_function(targets: tuple[Any, ...], fn: FunctionConverter) -> None:
    """Convert traced calls of ``targets`` (functions, or method names as strings) with ``fn``."""
    for target in targets:
        _FUNCTIONS[target] = fn


def refuse_function(targets: tuple[Any, ...], why: str) -> None:
    """Traced calls of ``targets`` are refused with ``why`` (which names the alternative)."""
    for target in targets:
        _REFUSED[target] = why


def find_function(target: Any) -> tuple[FunctionConverter | None, str | None]:
    """``(converter, None)``, ``(None, why it is refused)``, or ``(None, None)`` when unknown."""
    try:
        return _FUNCTIONS.get(target), _REFUSED.get(target)
    except TypeError:  # an unhashable target
        return None, None
