"""Image data sets from their distribution formats: MNIST and Fashion-MNIST (IDX files) and
CIFAR-10 (python pickle batches).

Images are ``uint8`` tensors of shape ``(N, C, H, W)`` with 256 levels. The validation split is
the last :data:`VALID_SIZE` images of the training file (the files come shuffled); the test split
is the official test file. Labels (10 classes) come with them when the files hold them: the IDX
label files ``train-labels-idx1-ubyte`` and ``t10k-labels-idx1-ubyte`` beside the images (without
them the splits have ``labels=None``), and the ``labels`` entry of every CIFAR-10 batch.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from survae_flowify.data._locate import candidates, locate
from survae_flowify.data.base import DataFormatError, DataSplits, SplitLabels

__all__ = [
    "CIFAR10_DEFAULT_DIR",
    "FASHION_MNIST_DEFAULT_DIR",
    "MNIST_DEFAULT_DIR",
    "NUM_CLASSES",
    "VALID_SIZE",
    "load_cifar10",
    "load_fashion_mnist",
    "load_mnist",
    "read_cifar_batch",
    "read_cifar_labels",
    "read_idx",
]

VALID_SIZE = 5000
"""Images held out from the end of the training file for validation."""

NUM_CLASSES = 10
"""Classes of MNIST, Fashion-MNIST and CIFAR-10."""

FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_DEFAULT_DIR = "data/mnist"
CIFAR10_DEFAULT_DIR = "data/cifar-10-batches-py"

_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
}
_IDX_LABEL_STEMS = {
    "train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip-compressed, by its ``.gz`` suffix).

    Header: two zero bytes, a type code (``0x08`` = unsigned byte, …), the number of dimensions
    ``n``, then ``n`` big-endian ``int32`` sizes; then the data in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataFormatError(f"{path}: cannot read IDX file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataFormatError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: IDX header truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - header != count * dtype.itemsize:
        raise DataFormatError(
            f"{path}: IDX header promises shape {dims} ({count * dtype.itemsize} bytes of data), "
            f"the file holds {len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype, count, header).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_file(directory: Path, split: str, stems: dict = _IDX_STEMS) -> Path | None:
    for stem in stems[split]:
        for name in (stem + ".gz", stem):
            if (directory / name).is_file():
                return directory / name
    return None


def _has_idx(directory: Path) -> bool:
    return all(_idx_file(directory, s) is not None for s in _IDX_STEMS)


def _idx_images(path: Path) -> torch.Tensor:
    images = read_idx(path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(
            f"{path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}"
        )
    return torch.from_numpy(images.copy()).unsqueeze(1)


def _idx_labels(path: Path, count: int) -> torch.Tensor:
    labels = read_idx(path)
    if labels.ndim != 1 or labels.dtype != np.uint8 or len(labels) != count:
        raise DataFormatError(
            f"{path}: expected {count} uint8 labels of shape ({count},) (one per image), got "
            f"{labels.dtype} {labels.shape}"
        )
    return torch.from_numpy(labels.astype(np.int64))


def _label_files(directory: Path) -> dict[str, Path] | None:
    """Both IDX label files, or ``None`` when neither is there; one without the other is an error."""
    found = {s: _idx_file(directory, s, _IDX_LABEL_STEMS) for s in _IDX_LABEL_STEMS}
    if all(p is None for p in found.values()):
        return None
    missing = [_IDX_LABEL_STEMS[s][0] for s, p in found.items() if p is None]
    if missing:
        raise DataFormatError(f"{directory}: holds one IDX label file but not {missing[0]}[.gz]; "
                              "add it, or remove the other to load the images without labels")
    return found  # type: ignore[return-value]


def _split(name: str, train: torch.Tensor, test: torch.Tensor,
           labels: tuple[torch.Tensor, torch.Tensor] | None = None) -> DataSplits:
    n_valid = min(VALID_SIZE, max(1, len(train) // 10))  # small files (tests): a tenth
    split_labels = None
    if labels is not None:
        y_train, y_test = labels
        split_labels = SplitLabels(y_train[:-n_valid], y_train[-n_valid:], y_test)
    return DataSplits(name, "image", train[:-n_valid], train[-n_valid:], test, levels=256,
                      labels=split_labels, num_classes=None if labels is None else NUM_CLASSES)


def _load_idx_set(name: str, data_dir: str | os.PathLike | None, subdirs: tuple[str, ...],
                  default: str, how: str) -> DataSplits:
    places = candidates(data_dir, subdirs, [default])
    directory = locate(
        name, places, _has_idx,
        expected="train-images-idx3-ubyte[.gz] and t10k-images-idx3-ubyte[.gz]", how=how,
    )
    train = _idx_images(_idx_file(directory, "train"))
    test = _idx_images(_idx_file(directory, "test"))
    if train.shape[1:] != test.shape[1:]:
        raise DataFormatError(
            f"{directory}: train images {tuple(train.shape[1:])} and test images "
            f"{tuple(test.shape[1:])} differ in shape"
        )
    files = _label_files(directory)
    labels = None if files is None else (_idx_labels(files["train"], len(train)),
                                         _idx_labels(files["test"], len(test)))
    return _split(name, train, test, labels)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> DataSplits:
    """Fashion-MNIST, 28×28 grey images; default directory ``/usr/share/datasets/fashion-mnist``
    (Debian's ``dataset-fashion-mnist`` package)."""
    return _load_idx_set(
        "fashion-mnist", data_dir, ("fashion-mnist", "fashion_mnist", "FashionMNIST"),
        FASHION_MNIST_DEFAULT_DIR,
        "Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or download "
        "the *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist into a "
        "directory and pass --data-dir DIR.",
    )


def load_mnist(data_dir: str | os.PathLike | None = None) -> DataSplits:
    """MNIST, 28×28 grey images, from its IDX files (default directory ``data/mnist``)."""
    return _load_idx_set(
        "mnist", data_dir, ("mnist", "MNIST", "MNIST/raw"), MNIST_DEFAULT_DIR,
        "Download train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz (from "
        "http://yann.lecun.com/exdb/mnist/ or a mirror) into a directory and pass --data-dir DIR.",
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file cannot run code."""

    _ALLOWED = frozenset({
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def read_cifar_batch(path: str | os.PathLike) -> np.ndarray:
    """Images of one CIFAR-10 python batch: ``uint8`` array ``(N, 3, 32, 32)``.

    A batch is a pickled dict whose ``data`` entry is an ``(N, 3072)`` ``uint8`` array, each row
    the red, green and blue 32×32 planes in turn.
    """
    return _cifar_images(Path(path), _read_cifar_dict(Path(path)))


def read_cifar_labels(path: str | os.PathLike) -> np.ndarray:
    """Labels of one CIFAR-10 python batch: ``int64`` array ``(N,)`` from its ``labels`` entry
    (a list of ``N`` integers, one per image of ``data``)."""
    return _read_cifar(Path(path))[1]


def _read_cifar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one batch, from one read of the file."""
    batch = _read_cifar_dict(path)
    images = _cifar_images(path, batch)
    labels = batch.get(b"labels", batch.get("labels"))
    try:
        array = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        array = None
    if array is None or array.shape != (len(images),):
        got = "none" if labels is None else f"{type(labels).__name__} of shape {np.shape(labels)}"
        raise DataFormatError(f"{path}: expected 'labels' with {len(images)} integers (one per "
                              f"image), got {got}")
    return images, array


def _read_cifar_dict(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise DataFormatError(f"{path}: not a CIFAR-10 python batch ({err})") from err
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path}: expected a dict with 'data' of shape (N, 3072)")
    return batch


def _cifar_images(path: Path, batch: dict) -> np.ndarray:
    data = batch.get(b"data", batch.get("data"))
    if not (isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == 3 * 32 * 32):
        raise DataFormatError(f"{path}: expected a dict with 'data' of shape (N, 3072)")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32)


_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def load_cifar10(data_dir: str | os.PathLike | None = None) -> DataSplits:
    """CIFAR-10, 3×32×32 colour images, from the ``cifar-10-batches-py`` directory."""
    places = candidates(data_dir, ("cifar-10-batches-py", "cifar10"), [CIFAR10_DEFAULT_DIR])
    directory = locate(
        "cifar10", places,
        lambda d: all((d / f).is_file() for f in (*_CIFAR_TRAIN, "test_batch")),
        expected="data_batch_1 … data_batch_5 and test_batch",
        how="Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
        "extract it and pass --data-dir pointing at cifar-10-batches-py (or its parent).",
    )
    batches = [_read_cifar(directory / f) for f in _CIFAR_TRAIN]
    train, y_train = (np.concatenate(parts) for parts in zip(*batches))
    test, y_test = _read_cifar(directory / "test_batch")
    return _split("cifar10", torch.from_numpy(train), torch.from_numpy(test),
                  (torch.from_numpy(y_train), torch.from_numpy(y_test)))
