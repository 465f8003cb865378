"""Trace a module's own ``forward`` with ``torch.fx`` and convert its graph node by node.

The graph must be a chain from the one input to the one output, except that a value ``h`` may
branch in two that meet again in a sum or a concatenation (either branch may be ``h`` itself):

* ``h + f(h)`` (``operator.add``, ``torch.add``, ``Tensor.add``, ``x += f(x)``) becomes
  :class:`~survae_flowify.layers.residual.Residual` with ``f`` converted the same way;
* ``a(h) + b(h)`` (a projection shortcut) becomes ``Repeat(2) → Parallel(a, b) → AddHalves``:
  the residual connection with a transform on both copies;
* ``torch.cat([a(h), b(h)], dim=1)`` becomes ``Repeat(2) → Parallel(a, b)``: the copy ``(h, h)``
  is the generative surjection of a residual connection (noise orthogonal to the diagonal), each
  copy goes through its branch, and the halves stay side by side. With the noise off it computes
  ``(a(h), b(h))``; the branches may change the number of channels.

All three are sound: the repetition is a generative surjection (a bound, noise orthogonal to the
diagonal), the branches are flowified transforms, and the sum is the exact summing map.

Every other node is a call with one tensor input: a submodule (converted by its module
converter, see :mod:`~survae_flowify.conversion.registry`, or recursively when it is an
``nn.Sequential``), or a function/method with a function converter. The network runs once on a
batch of 3 random inputs (eval mode, no gradients, training flags restored) to measure the
shape of every value; each flowified part is checked against them.
"""

from __future__ import annotations

import operator
import os
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from survae_flowify.algebra.sequential import Sequential
from survae_flowify.algebra.transform import Transform
from survae_flowify.conversion.registry import Call, EventShape, find_converter, find_function
from survae_flowify.layers.parallel import Parallel
from survae_flowify.layers.residual import AddHalves, Residual
from survae_flowify.transforms.repeat import Repeat

__all__ = ["FlowifyTracer", "convert_traced", "measure", "source_line"]

# Measure the shapes on this many samples: a view/reshape that merges or splits the batch shows
# as a batch size other than this one (1 or 2 could be hard-coded sizes in a network).
_PROBE_BATCH = 3
_ADDS = (operator.add, operator.iadd, torch.add, "add", "add_")
_CATS = (torch.cat, torch.concat, torch.concatenate)
_TORCH_DIR = os.path.dirname(torch.__file__)
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in \S+\n\s*(?P<code>[^\n]*)')

Part = tuple[str, Transform]
ConvertModule = Callable[[nn.Module, str, EventShape, dict[str, Any]], Transform | None]


class FlowifyTracer(fx.Tracer):
    """``torch.fx`` tracer that stops at what :func:`~survae_flowify.flowify` converts whole:
    flowified layers, ``nn.Sequential`` (converted part by part, names kept), every type with a
    registered converter, and ``torch.nn``'s own layers (fx's default)."""

    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (Transform, nn.Sequential)) or find_converter(m) is not None:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def convert_traced(module: nn.Module, shape: EventShape, ctx: dict[str, Any],
                   convert_module: ConvertModule) -> Sequential:
    """Trace ``module.forward`` and convert its graph (see the module docstring)."""
    name = type(module).__name__
    if shape is None:
        raise ValueError(f"flowify: converting {name}'s own forward (it is traced) needs the input's event "
                         "shape: pass flowify(..., input_shape=(C, H, W) or (D,))")
    try:
        graph = FlowifyTracer().trace(module)
    except Exception as err:  # fx raises TraceError, TypeError, RuntimeError, ...: all mean the same here
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"flowify: cannot trace {name}.forward with torch.fx ({type(err).__name__}: {reason}). A forward "
            "with data-dependent control flow cannot be traced; convert the module as a whole with "
            f"survae_flowify.register_converter({name}, fn), or write it as an nn.Sequential"
        ) from err
    gm = fx.GraphModule(module, graph)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    _measure(module, gm, shape)
    flow = _GraphConverter(gm, name, ctx, convert_module).run()
    # The parts built here (residual connections, copies) follow the network's dtype and device.
    state = _state_of(module)
    return flow if state is None else flow.to(device=state.device, dtype=state.dtype)


def _state_of(module: nn.Module) -> Tensor | None:
    """The module's first floating parameter or buffer (its dtype and device), if any."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return t
    return None


def _run(module: nn.Module, shape: tuple[int, ...], fn: Callable[[Tensor], Any]) -> Any:
    """``fn(probe)`` for a random batch of ``_PROBE_BATCH`` inputs of event shape ``shape``, in eval
    mode and without gradients, leaving ``module`` as it was (batch norm would update its running
    statistics in training mode)."""
    state = _state_of(module)
    dtype = torch.get_default_dtype() if state is None else state.dtype
    device = None if state is None else state.device
    probe = torch.randn(_PROBE_BATCH, *shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    modes = {m: m.training for m in module.modules()}
    try:
        module.eval()
        with torch.no_grad():
            return fn(probe.to(device))
    except Exception as err:
        lines = str(err).strip().splitlines() or [""]
        raise ValueError(f"flowify: {type(module).__name__} fails on an input of event shape {shape} "
                         f"({type(err).__name__}: {lines[0]})") from err
    finally:
        for m, training in modes.items():
            m.training = training


def measure(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The event shape of ``module``'s output for inputs of event shape ``shape``."""
    out = _run(module, shape, module)
    if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != _PROBE_BATCH:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"flowify: {type(module).__name__} returns {got} for a batch of {_PROBE_BATCH}; a "
                         "flowified layer needs one tensor with the batch dimension first")
    return tuple(out.shape[1:])


def _measure(module: nn.Module, gm: fx.GraphModule, shape: tuple[int, ...]) -> None:
    """Record every node's shape (``node.meta['tensor_meta']``)."""
    _run(module, shape, ShapeProp(gm).propagate)


def _is_tensor(node: fx.Node) -> bool:
    return isinstance(node.meta.get("tensor_meta"), TensorMetadata)


def source_line(node: fx.Node) -> str:
    """``file:line `code``` of the user's code that created ``node`` (fx's stack trace), or ''."""
    frames = [m for m in _FRAME.finditer(node.stack_trace or "") if not m["file"].startswith(_TORCH_DIR)]
    if not frames:
        return ""
    last = frames[-1]
    return f"{os.path.basename(last['file'])}:{last['line']} `{last['code'].strip()}`"


def _what(node: fx.Node) -> str:
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_module":
        return f"module {node.target!r}"
    target = node.target
    module = getattr(target, "__module__", None) or ""
    module = {"_operator": "operator", "torch._C._nn": "torch.nn.functional"}.get(module, module)
    return f"{module}.{getattr(target, '__name__', target)}".lstrip(".")


class _GraphConverter:
    """Walks the traced graph from its input to its output (see the module docstring)."""

    def __init__(self, gm: fx.GraphModule, owner: str, ctx: dict[str, Any], convert_module: ConvertModule):
        self.gm, self.owner, self.ctx, self.convert_module = gm, owner, ctx, convert_module
        nodes = list(gm.graph.nodes)
        inputs = [n for n in nodes if n.op == "placeholder"]
        required = [n for n in inputs if n.users]
        if len(required) != 1:
            names = ", ".join(n.name for n in required) or "none"
            raise ValueError(f"flowify: {owner}.forward must use exactly one input tensor, it uses {names}")
        self.input = required[0]
        self.data: set[fx.Node] = {self.input}  # the tensors computed from the input
        for n in nodes:
            if n.op.startswith("call_") and _is_tensor(n) and any(a in self.data for a in n.all_input_nodes):
                self.data.add(n)
                if n.meta["tensor_meta"].shape[0] != _PROBE_BATCH:
                    shape = tuple(n.meta["tensor_meta"].shape)
                    self._fail(n, f"its output has shape {shape} for a batch of {_PROBE_BATCH}: it merges or "
                                  "splits the batch dimension, which no flow can")
            elif n.op == "call_module" and any(a in self.data for a in n.all_input_nodes):
                if isinstance(gm.get_submodule(n.target), Transform):
                    self._fail(n, "a flowified layer returns (z, contribution), not a tensor; use the "
                                  "torch.nn layer in the network, or flowified layers only inside an "
                                  "nn.Sequential")
        (out,) = [n for n in nodes if n.op == "output"]
        result = out.args[0]
        if not isinstance(result, fx.Node) or result not in self.data:
            raise ValueError(f"flowify: {owner}.forward must return one tensor computed from its input, it "
                             f"returns {result!r}")
        self.output = result

    def run(self) -> Sequential:
        return Sequential(OrderedDict(self._chain(self.input, self.output)))

    # ------------------------------------------------------------------------------------ walking
    def _fail(self, node: fx.Node, why: str) -> None:
        where = source_line(node)
        raise ValueError(f"flowify: cannot convert node '{self._qualified(node)}' ({_what(node)}) of "
                         f"{self.owner}.forward" + (f" at {where}" if where else "") + f": {why}")

    def _qualified(self, node: fx.Node) -> str:
        """The node's name with the module path it was traced in (``block1.relu``)."""
        if node.op == "call_module":
            return str(node.target)
        stack = node.meta.get("nn_module_stack") or {}
        path = next(reversed(stack.values()))[0] if stack else ""
        return f"{path}.{node.name}" if path else node.name

    def _shape(self, node: fx.Node) -> tuple[int, ...]:
        return tuple(node.meta["tensor_meta"].shape[1:])

    def _inputs(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes if a in self.data]

    def _users(self, node: fx.Node) -> list[fx.Node]:
        return [u for u in node.users if u in self.data]

    def _chain(self, start: fx.Node, stop: fx.Node, first: fx.Node | None = None) -> list[Part]:
        """The parts that compute ``stop`` from ``start`` (``first``: the user of ``start`` to follow)."""
        parts: list[Part] = []
        current = start
        while current is not stop:
            users = [first] if first is not None and current is start else self._users(current)
            if len(users) == 1:
                (node,) = users
                if self._inputs(node) != [current] or node.target in _ADDS or node.target in _CATS:
                    self._fail(node, self._combination(node, current))
                part = self._unary(node, current)
                if part is not None:
                    parts.append((node.name, part))
                current = node
            elif len(users) == 2:
                join = self._join(current, users)
                ends = self._operands(join)
                branches = [[] if end is current else
                            self._chain(current, end, first=self._head(end, users, join)) for end in ends]
                parts.append((join.name, self._combine(join, current, ends, branches)))
                current = join
            else:
                uses = ", ".join(f"'{self._qualified(u)}'" for u in users) or "nothing"
                self._fail(current, f"its value is used by {uses}; a flow is a chain: a value may only "
                                    "branch in two that meet again as a(h) + b(h) or torch.cat([a(h), b(h)], "
                                    "dim=1)")
        return parts

    def _combination(self, node: fx.Node, current: fx.Node) -> str:
        others = [a for a in node.all_input_nodes if a is not current]
        if node.target in _ADDS or node.target in _CATS:
            if not others:
                return "it combines a value with itself (h + h); only h + f(h) is a flowified residual"
            return (f"it combines the input with {', '.join(repr(a.name) for a in others)}, which is not "
                    "computed from the same value (a parameter, a constant, or an earlier value); only "
                    "h + f(h) and torch.cat([h, f(h)]) are supported")
        return (f"it takes the tensors {', '.join(repr(a.name) for a in node.all_input_nodes)}: a "
                "flowified layer has one input (a parameter used functionally, e.g. F.linear(x, self.w), "
                "needs the module form nn.Linear, or register_converter for the enclosing module)")

    def _reach(self, node: fx.Node) -> set[fx.Node]:
        """``node`` and every value computed from it."""
        seen, todo = {node}, [node]
        while todo:
            for user in self._users(todo.pop()):
                if user not in seen:
                    seen.add(user)
                    todo.append(user)
        return seen

    def _join(self, current: fx.Node, users: list[fx.Node]) -> fx.Node:
        """Where the two branches from ``current`` meet: their first common value, an add or a cat."""
        order = {n: i for i, n in enumerate(self.gm.graph.nodes)}
        common = self._reach(users[0]) & self._reach(users[1])
        join = min(common, key=order.__getitem__) if common else None
        combines = join is not None and (join.target in _ADDS or join.target in _CATS)
        if not combines or len(self._operands(join)) != 2:
            where = ("never meet again" if join is None else
                     f"first meet at '{self._qualified(join)}' ({_what(join)})")
            self._fail(current, f"its value is used twice, and the two branches {where}; only a(h) + b(h) "
                                "and torch.cat([a(h), b(h)], dim=1) (either branch may be h itself) are "
                                "flows")
        return join

    def _operands(self, join: fx.Node) -> list[fx.Node]:
        """The two tensors that an add or a cat combines, in order."""
        if join.target in _CATS:
            tensors = join.args[0] if join.args else join.kwargs.get("tensors", ())
            operands = list(tensors) if isinstance(tensors, (list, tuple)) else []
        else:
            operands = [a for a in join.args[:2]]
        return operands if len(operands) == 2 and all(a in self.data for a in operands) else []

    def _head(self, end: fx.Node, users: list[fx.Node], join: fx.Node) -> fx.Node:
        """The user of the branching value from which the branch ending in ``end`` starts."""
        if self._users(end) != [join]:
            self._fail(end, f"its value is used again besides '{self._qualified(join)}', where the branches "
                            "meet")
        heads = [u for u in users if u is not join and end in self._reach(u)]
        if len(heads) != 1:
            self._fail(join, "its two branches share intermediate values; each branch must be a chain of its "
                             "own")
        return heads[0]

    def _combine(self, join: fx.Node, h: fx.Node, ends: list[fx.Node],
                 branches: list[list[Part]]) -> Transform:
        shape, outs = self._shape(h), [self._shape(e) for e in ends]
        fs = [Sequential(OrderedDict(b)) for b in branches]
        repeat = Repeat(shape, 2, **{k: self.ctx[k] for k in ("noise",) if k in self.ctx})
        if join.target in _CATS:
            dim = join.args[1] if len(join.args) > 1 else join.kwargs.get("dim", 0)
            if not isinstance(dim, int) or dim % (len(shape) + 1) != 1:
                self._fail(join, f"torch.cat along dim={dim}: only the channel/feature dimension (dim=1) is "
                                 "supported")
            both = Parallel(fs[0], fs[1], in_shapes=(shape, shape), out_shapes=tuple(outs))
            return Sequential(OrderedDict(repeat=repeat, branches=both))
        if outs[0] != outs[1]:
            self._fail(join, f"a(h) + b(h) with shapes {outs[0]} and {outs[1]}: a flowified sum needs equal "
                             "shapes (no broadcasting)")
        if join.kwargs.get("alpha", 1) != 1 or (join.target == torch.add and len(join.args) > 2):
            self._fail(join, "torch.add with alpha != 1; only a(h) + b(h) is a flowified sum")
        kwargs = {k: self.ctx[k] for k in ("noise", "inverse_density", "hidden") if k in self.ctx}
        if h in ends:  # h + f(h): the paper's residual connection
            return Residual(fs[1] if ends[0] is h else fs[0], shape=shape, **kwargs)
        kwargs.pop("noise", None)
        both = Parallel(fs[0], fs[1], in_shapes=(shape, shape), out_shapes=tuple(outs))
        return Sequential(OrderedDict(repeat=repeat, branches=both, add=AddHalves(outs[0], **kwargs)))

    # ---------------------------------------------------------------------------------- one node
    def _unary(self, node: fx.Node, current: fx.Node) -> Transform | None:
        in_shape, out_shape = self._shape(current), self._shape(node)
        if node.op == "call_module":
            try:
                part = self.convert_module(self.gm.get_submodule(node.target), str(node.target), in_shape,
                                           self.ctx)
            except ValueError as err:
                where = source_line(node)
                if not where:
                    raise
                raise ValueError(f"{err} (called in {self.owner}.forward at {where})") from err
        else:
            if node.args and node.args[0] is not current:
                self._fail(node, "the tensor must be the first argument")
            converter, refused = find_function(node.target)
            if refused is not None:
                self._fail(node, f"{_what(node)} is {refused}")
            if converter is None:
                self._fail(node, "no converter for this call; supported calls are listed in "
                                 "survae_flowify.conversion's docstring; wrap it in a module and register a "
                                 "converter with survae_flowify.register_converter(type, fn)")
            call = Call(_what(node), tuple(node.args[1:]), dict(node.kwargs), in_shape, out_shape)
            try:
                part = converter(call, self.ctx)
            except (ValueError, TypeError) as err:
                self._fail(node, str(err))
        self._check_shapes(node, part, in_shape, out_shape)
        return part

    def _check_shapes(self, node: fx.Node, part: Transform | None, in_shape: tuple[int, ...],
                      out_shape: tuple[int, ...]) -> None:
        if part is None:
            if in_shape != out_shape:
                self._fail(node, f"converted to the identity, but it maps {in_shape} to {out_shape}")
            return
        sides = (("inputs", part.in_shape, in_shape), ("outputs", part.out_shape, out_shape))
        for side, declared, actual in sides:
            if declared is not None and (len(declared) != len(actual) or any(
                    d is not None and d != a for d, a in zip(declared, actual))):
                self._fail(node, f"the flowified {type(part).__name__} has {side} of shape {declared} "
                                 f"where the network has {actual} (a flowified Conv2d keeps every pixel: it "
                                 "pads the image so that its kernel tiles it, where nn.Conv2d drops the last "
                                 "rows/columns)")
