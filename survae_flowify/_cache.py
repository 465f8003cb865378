r"""One cache policy for tensors derived from parameters alone (rotation matrices, dense weights,
spline tables), used by :class:`~survae_flowify.layers.rotations.Rotation`, the flowified
:class:`~survae_flowify.layers.linear.Linear` (SVD and Gram) and
:class:`~survae_flowify.transforms.spline.RqSpline`.

**When** a derived tensor is reused: only in eval mode, when no gradient has to flow through it
(autograd off, or none of its inputs requires a gradient) and outside ``torch.compile`` tracing
(whose graph computes it itself: the check below would break the graph).

**Keyed on content.** An entry keeps a copy of every tensor it was derived from and an ``extra``
key (the attributes it depends on, e.g. a spline's ``tail_bound``, the output dtype). It is reused
only when every input has the same dtype, device, shape and *values* and the extra key is
equal. Version counters and data pointers are not enough: edits through ``p.data``
(a hand-written EMA, clipping, ``p.data.copy_``) bypass the version counter, and new storage
after ``.to()`` may reuse a freed address. Comparing values costs one read of the inputs per call
(for FMLP-MNIST about 1.3 M numbers, a small fraction of one batch's products) and catches every
edit; rebuilding costs ``O(n³)`` per rotation.

On a GPU the comparison is one device reduction and one host sync per entry (one per layer
call), not one per tensor. Entries are dropped on ``train()``/``eval()`` and on
``.to()``/``.double()``/... (no tensors of an old device or dtype stay alive), and never pickled.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["ParameterCache", "compiling", "gradient_needed", "values_equal"]

T = TypeVar("T")


def compiling() -> bool:
    """Whether ``torch.compile``/``torch.export`` is tracing the current call.

    ``torch.compiler.is_compiling`` is new in torch 2.3, the floor declared in ``pyproject.toml``;
    this is the one place that calls it.
    """
    return torch.compiler.is_compiling()


def gradient_needed(inputs: Sequence[Tensor]) -> bool:
    """Whether autograd would record a graph through tensors derived from ``inputs``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in inputs)


class _Entry(NamedTuple):
    extra: Hashable
    inputs: tuple[Tensor, ...]  # copies of the inputs the value was derived from
    value: Any


def _equal_on_cpu(old: Tensor, new: Tensor) -> bool:
    # numpy's comparison is ~5× faster than torch.equal on one CPU thread (0.08 vs 0.4 ms for a
    # 784 × 784 float32 matrix, measured); torch.equal for dtypes numpy lacks (bfloat16).
    try:
        return bool(np.array_equal(old.numpy(), new.detach().numpy()))
    except TypeError:
        return torch.equal(old, new)


def values_equal(pairs: Sequence[tuple[Tensor, Tensor]], *, one_sync: bool) -> bool:
    """Whether every pair holds equal values (same dtype, device and shape assumed; NaN is never
    equal, so a NaN parameter rebuilds every time rather than risk a stale value).

    On the CPU the pairs are compared one by one, stopping at the first difference. A GPU
    comparison is a host sync: with ``one_sync`` the pairs are reduced on the device and read
    back once.
    """
    if not one_sync:
        return all(_equal_on_cpu(old, new) for old, new in pairs)
    return bool(torch.stack([(old == new).all() for old, new in pairs]).all())


def _same(entry: _Entry, inputs: Sequence[Tensor], extra: Hashable) -> bool:
    if entry.extra != extra or len(entry.inputs) != len(inputs):
        return False
    for old, new in zip(entry.inputs, inputs):
        if old.dtype != new.dtype or old.device != new.device or old.shape != new.shape:
            return False
    on_cpu = all(t.device.type == "cpu" for t in inputs)
    return values_equal(list(zip(entry.inputs, inputs)), one_sync=not on_cpu)


class ParameterCache(nn.Module):
    """Mixin: :meth:`_derived` reuses tensors computed from parameters while they are unchanged."""

    def _derived(self, name: str, inputs: Sequence[Tensor], build: Callable[[], T],
                 extra: Hashable = ()) -> T:
        """``build()``, reused under the policy of :mod:`survae_flowify._cache`.

        ``inputs``: every tensor ``build`` reads (parameters, buffers); ``extra``: every other
        value it depends on (attributes, the requested dtype). ``name`` tells entries apart.
        """
        if self.training or compiling() or gradient_needed(inputs):
            return build()
        entries = self.__dict__.setdefault("_derived_cache", {})
        entry = entries.get(name)
        if entry is not None and _same(entry, inputs, extra):
            return entry.value
        value = build()
        entries[name] = _Entry(extra, tuple(t.detach().clone() for t in inputs), value)
        return value

    def clear_cache(self) -> None:
        """Drop every cached tensor of this module (not of its submodules)."""
        self.__dict__.pop("_derived_cache", None)

    def train(self, mode: bool = True) -> ParameterCache:
        self.clear_cache()
        return super().train(mode)

    def _apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> ParameterCache:
        self.clear_cache()  # .to(), .double(), .cuda(): cached tensors of the old kind must not linger
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_derived_cache", None)
        return state

    def __setstate__(self, state: dict) -> None:
        state.pop("_cache", None)  # the cache attribute of modules pickled by older versions
        super().__setstate__(state)
