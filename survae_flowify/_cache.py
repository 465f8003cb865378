r"""One cache policy for tensors derived from parameters alone (rotation matrices, dense weights,
spline tables), used by :class:`~survae_flowify.layers.rotations.Rotation`, the flowified
:class:`~survae_flowify.layers.linear.Linear` (SVD and Gram) and
:class:`~survae_flowify.transforms.spline.RqSpline`.

**When** a derived tensor is reused: only in eval mode, when no gradient has to flow through it
(autograd off, or none of its inputs requires a gradient) and outside ``torch.compile`` tracing
(whose graph computes it itself: the check below would break the graph).

**Keyed on content.** An entry keeps a copy of every tensor it was derived from and an ``extra``
key (the attributes it depends on, e.g. a spline's ``tail_bound``, the output dtype). It is reused
only when every input has the same dtype, device, shape and *values* (``torch.equal``) and the
extra key is equal. Version counters and data pointers are not enough: edits through ``p.data``
(a hand-written EMA, clipping, ``p.data.copy_``) bypass the version counter, and new storage
after ``.to()`` may reuse a freed address. Comparing values costs one read of the inputs per call
(for FMLP-MNIST about 1.3 M numbers, a small fraction of one batch's products) and catches every
edit; rebuilding costs ``O(n³)`` per rotation.

Entries are dropped on ``train()``/``eval()`` and on ``.to()``/``.double()``/... (no tensors of an
old device or dtype stay alive), and never pickled.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["ParameterCache", "compiling", "gradient_needed"]

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


def _same(entry: _Entry, inputs: Sequence[Tensor], extra: Hashable) -> bool:
    if entry.extra != extra or len(entry.inputs) != len(inputs):
        return False
    for old, new in zip(entry.inputs, inputs):
        if old.dtype != new.dtype or old.device != new.device or old.shape != new.shape:
            return False
    return all(torch.equal(old, new) for old, new in zip(entry.inputs, inputs))


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
