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


def write_idx_set(directory: Path, train: np.ndarray, test: np.ndarray, *, gz: bool = True) -> Path:
    """The four files of an MNIST-style directory (labels included, as the real sets have them)."""
    suffix = ".gz" if gz else ""
    write_idx(directory / f"train-images-idx3-ubyte{suffix}", train)
    write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", test)
    write_idx(directory / f"train-labels-idx1-ubyte{suffix}", np.zeros(len(train), np.uint8))
    write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", np.zeros(len(test), np.uint8))
    return directory


def write_cifar_batch(path: Path, images: np.ndarray) -> Path:
    """A CIFAR-10 python batch: a dict with bytes keys, ``data`` rows = R, G, B planes (3072 bytes)."""
    batch = {
        b"batch_label": b"test batch",
        b"labels": [0] * len(images),
        b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1),
        b"filenames": [f"img{i}.png".encode() for i in range(len(images))],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    return path


def write_cifar_dir(directory: Path, per_batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Five training batches and a test batch of random images; returns what was written."""
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        write_cifar_batch(directory / name, images)
        written[name] = images
    return written
