"""Data sets for training and evaluation (DESIGN.md §5).

``load_dataset(name, data_dir=None)`` returns :class:`DataSplits` (train / validation / test
tensors, the number of integer levels for images). Names (:data:`DATASET_NAMES`):

* images (``uint8``, bits per dimension): ``digits`` (scikit-learn's 8×8 digits, 17 levels,
  embedded: no download), ``mnist``, ``fashion-mnist`` (IDX files), ``cifar10`` (python batches);
* tabular (float32, nats): ``power``, ``gas``, ``hepmass``, ``miniboone``, ``bsds300`` (MAF's
  preprocessed files and preprocessing);
* 2-D densities (float32, nats): ``moons``, ``checkerboard``, ``circles``, ``eight-gaussians``,
  ``pinwheel``, ``two-spirals`` (procedural).

Image sets carry class labels where their files hold them (``DataSplits.labels``,
``num_classes``): digits, MNIST and Fashion-MNIST (IDX label files), CIFAR-10.

A missing data set raises :class:`DataNotFoundError` naming where it looked and how to get it;
a malformed file raises :class:`DataFormatError`.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from survae_flowify.data._locate import DATA_ENV
from survae_flowify.data.base import (
    DataError,
    DataFormatError,
    DataNotFoundError,
    DataSplits,
    Kind,
    SplitLabels,
)
from survae_flowify.data.digits import load_digits
from survae_flowify.data.images import (
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    read_cifar_batch,
    read_cifar_labels,
    read_idx,
)
from survae_flowify.data.tabular import TABULAR_NAMES, load_tabular
from survae_flowify.data.toy2d import TOY_BOUND, TOY_NAMES, load_toy, sample_toy

__all__ = [
    "DATASET_INFO",
    "DATASET_NAMES",
    "DATA_ENV",
    "IMAGE_NAMES",
    "DatasetInfo",
    "TABULAR_NAMES",
    "TOY_BOUND",
    "TOY_NAMES",
    "DataError",
    "DataFormatError",
    "DataNotFoundError",
    "DataSplits",
    "SplitLabels",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_tabular",
    "load_toy",
    "read_cifar_batch",
    "read_cifar_labels",
    "read_idx",
    "sample_toy",
]

IMAGE_NAMES: tuple[str, ...] = ("digits", "fashion-mnist", "mnist", "cifar10")
DATASET_NAMES: tuple[str, ...] = (*IMAGE_NAMES, *TABULAR_NAMES, *TOY_NAMES)


class DatasetInfo(NamedTuple):
    """What a data set looks like, known without loading it."""

    kind: Kind
    shape: tuple[int, ...]
    levels: int | None


DATASET_INFO: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("image", (1, 8, 8), 17),
    "fashion-mnist": DatasetInfo("image", (1, 28, 28), 256),
    "mnist": DatasetInfo("image", (1, 28, 28), 256),
    "cifar10": DatasetInfo("image", (3, 32, 32), 256),
    "power": DatasetInfo("tabular", (6,), None),
    "gas": DatasetInfo("tabular", (8,), None),
    "hepmass": DatasetInfo("tabular", (21,), None),
    "miniboone": DatasetInfo("tabular", (43,), None),
    "bsds300": DatasetInfo("tabular", (63,), None),
    **{name: DatasetInfo("toy", (2,), None) for name in TOY_NAMES},
}
"""Kind, event shape and levels of every data set (the real files; test files may differ)."""


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> DataSplits:
    """Load data set ``name`` (one of :data:`DATASET_NAMES`).

    ``data_dir`` is where to look for file-based sets (the directory itself, or a parent holding
    the set's usual subdirectory); it is ignored by ``digits`` and the 2-D densities.
    """
    if name == "digits":
        return load_digits()
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    if name == "mnist":
        return load_mnist(data_dir)
    if name == "cifar10":
        return load_cifar10(data_dir)
    if name in TABULAR_NAMES:
        return load_tabular(name, data_dir)
    if name in TOY_NAMES:
        return load_toy(name)
    raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
