"""Hypothesis strategies for tensors and batches, for property tests of transforms."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

__all__ = ["batch_sizes", "batches", "dtypes", "seeds"]


def dtypes() -> st.SearchStrategy[torch.dtype]:
    """``torch.float32`` or ``torch.float64``."""
    return st.sampled_from([torch.float32, torch.float64])


def seeds() -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=2**31 - 1)


def batch_sizes(max_size: int = 8) -> st.SearchStrategy[int]:
    return st.integers(min_value=1, max_value=max_size)


@st.composite
def batches(
    draw: st.DrawFn,
    event_shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float64,
    max_batch: int = 8,
    bound: float = 4.0,
) -> torch.Tensor:
    """A ``(B, *event_shape)`` tensor of finite values in ``[−bound, bound]``."""
    b = draw(batch_sizes(max_batch))
    values = draw(
        arrays(np.float64, (b, *event_shape),
               elements=st.floats(-bound, bound, allow_nan=False, allow_infinity=False))
    )
    return torch.from_numpy(values).to(dtype)
