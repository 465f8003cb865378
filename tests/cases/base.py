"""One battery case: how to build a transform and feed it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from survae_flowify import Transform


@dataclass(frozen=True)
class Case:
    """``make()`` builds the transform (the battery perturbs its parameters itself).

    ``in_shape``: the event shape fed to ``forward``. ``linear_gaussian``: the closed-form oracle
    applies to ``Flow(StandardNormal(out), transform)``. ``sample_input``: optional custom
    input (e.g. integers for ``Dequantize``). ``log_det``: whether the autograd log-det check
    applies (bijections and noise-free generative surjections). ``gradcheck``: whether float64
    gradcheck of the contribution is meaningful. ``context_features``: a conditional case, fed
    :meth:`context` at every call.
    """

    make: Callable[[], Transform]
    in_shape: tuple[int, ...]
    linear_gaussian: bool = False
    sample_input: Callable[[int, torch.dtype], Tensor] | None = None
    log_det: bool = True
    gradcheck: bool = True
    context_features: int | None = None

    def context(self, batch: int, dtype: torch.dtype, seed: int = 1) -> Tensor | None:
        """A fixed context ``(batch, context_features)`` for conditional cases, else ``None``."""
        if self.context_features is None:
            return None
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, self.context_features, generator=g).to(dtype)

    def input(self, batch: int, dtype: torch.dtype, seed: int = 0) -> Tensor:
        torch.manual_seed(seed)
        if self.sample_input is not None:
            return self.sample_input(batch, dtype)
        return torch.randn(batch, *self.in_shape, dtype=dtype)
