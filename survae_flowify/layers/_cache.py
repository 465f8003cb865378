"""A module mixin for tensors cached in eval mode (rotation and dense matrices)."""

from __future__ import annotations

from torch import nn


class EvalCache(nn.Module):
    """Holds ``self._cache``; cleared by ``train()``/``eval()`` and never pickled."""

    _cache: object = None

    def train(self, mode: bool = True) -> EvalCache:
        self._cache = None
        return super().train(mode)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_cache"] = None
        return state
