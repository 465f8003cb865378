"""``flowify(module)``: an ``nn.Sequential`` part by part, a layer by its converter, anything else by
tracing its ``forward`` (:mod:`~survae_flowify.conversion.tracing`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from survae_flowify import _checks
from survae_flowify.algebra.sequential import Sequential
from survae_flowify.algebra.transform import Transform
from survae_flowify.conversion.registry import EventShape, find_converter, module_advice
from survae_flowify.conversion.tracing import convert_traced, measure

__all__ = ["flowify"]


def flowify(
    module: nn.Module,
    *,
    keep_weights: bool = True,
    input_shape: int | tuple[int, ...] | None = None,
    **layer_kwargs: Any,
) -> Sequential:
    """Convert ``module`` to a flowified transform.

    ``module`` is an ``nn.Sequential`` (nested or not), a single layer, or any network written
    as a class: its own ``forward`` is traced with ``torch.fx`` and converted node by node
    (supported nodes: see :mod:`survae_flowify.conversion`).

    Args:
        module: the network.
        keep_weights: copy the trained weights (``nn.Linear`` and ``nn.Conv2d`` through the SVD
            of their weight, batch norms through their running statistics); otherwise fresh
            flowified layers of the same sizes.
        input_shape: the event shape of one input, e.g. ``(1, 28, 28)``. Needed to trace a
            network's ``forward``; for an ``nn.Sequential`` optional, it gives ``Flatten`` the
            shape it needs to invert and convolutions the image size they need when
            ``stride > 1``, and checks that the layers fit together.
        layer_kwargs: passed to every flowified ``Linear`` and ``Conv2d`` (``inverse_density``,
            ``noise``, ``rotation``, ...); ``noise``, ``inverse_density`` and ``hidden`` also reach
            residual connections and average pooling.

    Returns an :class:`~survae_flowify.algebra.sequential.Sequential`. An ``nn.Sequential``'s parts
    keep the network's names (dropped layers such as ``nn.Identity`` leave gaps in the numbers);
    nested ones become nested ones. A traced network's parts are named after the graph's nodes
    (``fc1``, ``block1_conv``, ``add`` for a residual connection). Raises ``ValueError`` naming
    the layer (its path, e.g. ``'2.1'``) or the traced node (its qualified name and source line)
    that cannot be converted, with the invertible alternative when there is one.
    """
    shape = None if input_shape is None else _checks.shape("flowify", "input_shape", input_shape)
    ctx = {"keep_weights": _checks.boolean("flowify", "keep_weights", keep_weights), **layer_kwargs}
    if isinstance(module, nn.Sequential):
        converted, _ = _convert_sequential(module, "", shape, ctx)
        return converted
    if _traced(module):
        return convert_traced(module, shape, ctx, _convert_node)
    part, _ = _convert(module, "0", shape, ctx)
    return Sequential() if part is None else Sequential(part)


def _traced(module: nn.Module) -> bool:
    """A network written as a class: not a flowified layer, no converter, not a torch.nn layer."""
    if isinstance(module, (Transform, nn.Sequential)) or find_converter(module) is not None:
        return False
    return not type(module).__module__.startswith("torch.")


def _convert_node(module: nn.Module, path: str, shape: EventShape, ctx: dict[str, Any]) -> Transform | None:
    """A submodule called by a traced forward (a leaf of :class:`FlowifyTracer`)."""
    return _convert(module, path, shape, ctx)[0]


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
    converter = find_converter(module)
    if converter is None:
        if _traced(module):  # a block written as a class inside an nn.Sequential
            try:
                return convert_traced(module, shape, ctx, _convert_node), measure(module, shape)
            except ValueError as err:
                raise ValueError(f"flowify: in layer '{path}' ({type(module).__name__}): {err}") from err
        raise ValueError(f"flowify: cannot convert layer '{path}' ({module}): {module_advice(module)}")
    try:
        part = converter(module, input_shape=shape, **ctx)
    except (ValueError, TypeError) as err:
        raise ValueError(f"flowify: cannot convert layer '{path}' ({module}): {err}") from err
    if part is not None and not isinstance(part, Transform):
        raise TypeError(f"flowify: the converter for {type(module).__name__} returned "
                        f"{type(part).__name__}, expected a survae_flowify Transform (or None for the "
                        "identity)")
    if part is None:
        after = shape
    else:
        _check_fits(part, path, shape)
        after = _shape_after(part, shape)
    if shape is None:
        return part, after
    # The network's own output shape, measured: it continues the chain (pooling and kernels
    # declare open sizes), and a flowified layer that declares another one is reported here.
    network = measure(module, shape)
    if after is not None and after != network:
        raise ValueError(
            f"flowify: layer '{path}' ({module}) maps {shape} to {network}, but its flowified "
            f"{type(part).__name__} gives {after} (a flowified Conv2d keeps every pixel: it pads the image "
            "so that its kernel tiles it, where nn.Conv2d drops the last rows/columns)"
        )
    return part, network


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
