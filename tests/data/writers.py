"""Writers of small data files in their real distribution formats (used by the loader tests)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """IDX: 0x00 0x00, type code 0x08 (ubyte), ndim, big-endian int32 sizes, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.tobytes()
    compress = path.suffix == ".gz" if compress is None else compress
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def write_idx_set(directory: Path, train: np.ndarray, test: np.ndarray, *, gz: bool = True,
                  train_labels: np.ndarray | None = None, test_labels: np.ndarray | None = None,
                  labels: bool = True) -> Path:
    """The four files of an MNIST-style directory (labels included, as the real sets have them;
    zeros unless given; ``labels=False`` writes the two image files only)."""
    suffix = ".gz" if gz else ""
    write_idx(directory / f"train-images-idx3-ubyte{suffix}", train)
    write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", test)
    if labels:
        for name, y, n in (("train", train_labels, len(train)), ("t10k", test_labels, len(test))):
            write_idx(directory / f"{name}-labels-idx1-ubyte{suffix}",
                      np.zeros(n, np.uint8) if y is None else y)
    return directory


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int] | None = None) -> Path:
    """A CIFAR-10 python batch: a dict with bytes keys, ``data`` rows = R, G, B planes (3072 bytes),
    ``labels`` a list of ints (zeros unless given)."""
    batch = {
        b"batch_label": b"test batch",
        b"labels": [0] * len(images) if labels is None else list(labels),
        b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1),
        b"filenames": [f"img{i}.png".encode() for i in range(len(images))],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return path


def write_cifar_dir(directory: Path, per_batch: int, rng: np.random.Generator,
                    labels: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Five training batches and a test batch of random images (and random labels 0 … 9, kept in
    ``labels`` when given); returns the images written."""
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, per_batch)
        write_cifar_batch(directory / name, images, [int(v) for v in y])
        written[name] = images
        if labels is not None:
            labels[name] = y
    return written
