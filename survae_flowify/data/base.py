"""What every loader returns (:class:`DataSplits`) and the errors a loader raises."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "DataError", "DataFormatError", "DataNotFoundError", "DataSplits", "Kind", "SplitLabels",
]

Kind = Literal["image", "tabular", "toy"]


class DataError(Exception):
    """Base class of the data errors a user can fix (missing or malformed files)."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data set's files are not where they were looked for.

    The message names the data set, every place looked in, the files expected there and how to
    get them.
    """

    def __init__(self, name: str, looked_in: Sequence[Path], expected: str, how: str) -> None:
        places = ", ".join(str(p) for p in looked_in) or "(nowhere)"
        super().__init__(
            f"data set {name!r} not found: looked for {expected} in {places}. {how}"
        )
        self.name = name
        self.looked_in = tuple(looked_in)


class DataFormatError(DataError, ValueError):
    """A data file exists but is not in the expected format (truncated, wrong header, ...)."""


class SplitLabels(NamedTuple):
    """Class labels of each split: ``int64`` tensors of shape ``(N,)``, values ``0 … K−1``."""

    train: Tensor
    valid: Tensor
    test: Tensor


@dataclass(frozen=True)
class DataSplits:
    """Train / validation / test tensors of one data set.

    ``levels`` is the number of integer levels of discrete data (images: values in
    ``{0, …, levels−1}``, stored as ``uint8``) and ``None`` for continuous data. Test metrics are
    bits per dimension for images (``−log p / (D ln 2)`` of the discrete bound) and nats per
    example for tabular and 2-D data.

    ``labels`` (:class:`SplitLabels`, or ``None`` for a data set without labels) holds one class
    label per example of each split, in ``0 … num_classes − 1``; ``num_classes`` is set exactly
    when ``labels`` is. Mismatched lengths or labels out of range raise :class:`DataFormatError`.
    """

    name: str
    kind: Kind
    train: Tensor
    valid: Tensor
    test: Tensor
    levels: int | None = None
    labels: SplitLabels | None = None
    num_classes: int | None = None

    def __post_init__(self) -> None:
        if (self.labels is None) != (self.num_classes is None):
            raise DataFormatError(f"{self.name}: labels and num_classes go together, got labels "
                                  f"{'None' if self.labels is None else 'set'} and num_classes "
                                  f"{self.num_classes}")
        if self.labels is None:
            return
        if not isinstance(self.labels, SplitLabels):
            raise TypeError(f"{self.name}: labels must be SplitLabels, got {type(self.labels).__name__}")
        for split, y in zip(SplitLabels._fields, self.labels):
            self._check_labels(split, y)

    def _check_labels(self, split: str, y: Tensor) -> None:
        n = len(getattr(self, split))
        if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (n,):
            got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
            raise DataFormatError(f"{self.name}: the {split} labels must be an int64 tensor of "
                                  f"shape ({n},) (one per example), got {got}")
        if n and not (0 <= int(y.min()) and int(y.max()) < self.num_classes):  # type: ignore[operator]
            raise DataFormatError(f"{self.name}: the {split} labels must lie in 0 … "
                                  f"{self.num_classes - 1} ({self.num_classes} classes), got "  # type: ignore[operator]
                                  f"{int(y.min())} … {int(y.max())}")

    @property
    def shape(self) -> tuple[int, ...]:
        """Event shape of one example, e.g. ``(1, 28, 28)`` or ``(6,)``."""
        return tuple(self.train.shape[1:])

    @property
    def dim(self) -> int:
        """Number of dimensions ``D`` of one example."""
        return math.prod(self.shape)

    @property
    def metric(self) -> Literal["bpd", "nats"]:
        """``"bpd"`` for images, ``"nats"`` otherwise."""
        return "bpd" if self.kind == "image" else "nats"

    def subset(self, n: int) -> DataSplits:
        """The first ``n`` examples of every split (quick runs and tests)."""
        if n < 1:
            raise ValueError(f"subset: n must be >= 1, got {n}")
        labels = None if self.labels is None else SplitLabels(*(y[:n] for y in self.labels))
        return replace(self, train=self.train[:n], valid=self.valid[:n], test=self.test[:n],
                       labels=labels)

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.kind}, shape {self.shape}, train {len(self.train)}, "
            f"valid {len(self.valid)}, test {len(self.test)}"
            + (f", {self.levels} levels" if self.levels else "")
            + (f", {self.num_classes} classes" if self.num_classes else "")
        )
