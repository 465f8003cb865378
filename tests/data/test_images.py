"""Image loaders on small files written here in their real formats (IDX, CIFAR-10 batches)."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest
import torch

from survae_flowify.data import (
    DataFormatError,
    DataNotFoundError,
    load_cifar10,
    load_dataset,
    load_fashion_mnist,
    load_mnist,
    read_cifar_batch,
    read_idx,
)
from tests.data.writers import write_cifar_batch, write_cifar_dir, write_idx, write_idx_set

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    images = RNG.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = write_idx(tmp_path / f"x-idx3-ubyte{suffix}", images)
    got = read_idx(path)
    assert got.dtype == np.uint8 and got.shape == (7, 5, 3)
    np.testing.assert_array_equal(got, images)


def test_read_idx_bytes_layout_is_big_endian(tmp_path):
    # written by hand, not by the helper: dims 2 x 3 stored as big-endian int32
    raw = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
    (tmp_path / "a.idx").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), np.arange(6).reshape(2, 3))


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(DataFormatError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    good = write_idx(tmp_path / "t", np.zeros((4, 2, 2), np.uint8))
    good.write_bytes(good.read_bytes()[:-3])
    with pytest.raises(DataFormatError, match="promises shape"):
        read_idx(good)
    (tmp_path / "broken.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match="cannot read"):
        read_idx(tmp_path / "broken.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_from_directory(tmp_path, gz):
    train = RNG.integers(0, 256, (50, 28, 28), dtype=np.uint8)
    test = RNG.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    write_idx_set(tmp_path / "m", train, test, gz=gz)
    data = load_mnist(tmp_path / "m")
    assert data.kind == "image" and data.levels == 256 and data.shape == (1, 28, 28)
    assert data.train.dtype == torch.uint8
    # validation = the last tenth of the training file (for small files), test = the test file
    assert len(data.train) == 45 and len(data.valid) == 5 and len(data.test) == 12
    np.testing.assert_array_equal(data.train[:, 0].numpy(), train[:45])
    np.testing.assert_array_equal(data.valid[:, 0].numpy(), train[45:])
    np.testing.assert_array_equal(data.test[:, 0].numpy(), test)
    assert data.metric == "bpd" and data.dim == 784


def test_full_size_validation_split_is_5000(tmp_path):
    write_idx_set(tmp_path, np.zeros((60000, 1, 1), np.uint8), np.zeros((3, 1, 1), np.uint8), gz=False)
    data = load_mnist(tmp_path)
    assert (len(data.train), len(data.valid)) == (55000, 5000)


def test_fashion_mnist_found_in_subdirectory_of_data_dir(tmp_path):
    write_idx_set(tmp_path / "fashion-mnist", np.ones((20, 4, 4), np.uint8), np.ones((3, 4, 4), np.uint8))
    data = load_dataset("fashion-mnist", tmp_path)
    assert data.name == "fashion-mnist" and data.shape == (1, 4, 4)


def test_fashion_mnist_missing_names_places_and_debian_package(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_fashion_mnist(tmp_path / "nowhere")
    text = str(err.value)
    assert str(tmp_path / "nowhere") in text and "dataset-fashion-mnist" in text
    assert "train-images-idx3-ubyte" in text


def test_fashion_mnist_default_directory_and_env(tmp_path, monkeypatch):
    from survae_flowify.data import images

    assert images.FASHION_MNIST_DEFAULT_DIR == "/usr/share/datasets/fashion-mnist"  # Debian's package
    monkeypatch.setattr(images, "FASHION_MNIST_DEFAULT_DIR", str(tmp_path / "default"))
    monkeypatch.setenv("SURVAE_FLOWIFY_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError) as err:
        load_fashion_mnist()
    assert str(tmp_path / "default") in str(err.value)
    assert str(tmp_path / "fashion-mnist") in str(err.value)
    write_idx_set(tmp_path / "fashion-mnist", np.ones((20, 4, 4), np.uint8), np.ones((3, 4, 4), np.uint8))
    assert load_fashion_mnist().shape == (1, 4, 4)


def test_cifar_batch_layout_is_rgb_planes(tmp_path):
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)]).astype(np.uint8)
    with open(tmp_path / "b", "wb") as f:
        pickle.dump({b"data": row[None], b"labels": [3]}, f, protocol=2)
    images = read_cifar_batch(tmp_path / "b")
    assert images.shape == (1, 3, 32, 32)
    assert [int(images[0, c].min()) for c in range(3)] == [10, 20, 30]
    assert [int(images[0, c].max()) for c in range(3)] == [10, 20, 30]


def test_load_cifar10(tmp_path):
    written = write_cifar_dir(tmp_path / "cifar-10-batches-py", 20, RNG)
    data = load_cifar10(tmp_path)  # the parent: finds cifar-10-batches-py/
    assert data.shape == (3, 32, 32) and data.levels == 256
    train = np.concatenate([written[f"data_batch_{i}"] for i in range(1, 6)])
    assert len(data.train) + len(data.valid) == 100
    np.testing.assert_array_equal(torch.cat([data.train, data.valid]).numpy(), train)
    np.testing.assert_array_equal(data.test.numpy(), written["test_batch"])


def test_cifar_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    with open(tmp_path / "evil", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(DataFormatError, match="refusing"):
        read_cifar_batch(tmp_path / "evil")


def test_cifar_malformed_and_missing(tmp_path):
    write_cifar_batch(tmp_path / "ok", np.zeros((2, 3, 32, 32), np.uint8))
    with open(tmp_path / "wrong", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8)}, f)
    with pytest.raises(DataFormatError, match="3072"):
        read_cifar_batch(tmp_path / "wrong")
    with gzip.open(tmp_path / "gz", "wb") as f:
        f.write(b"abc")
    with pytest.raises(DataFormatError):
        read_cifar_batch(tmp_path / "gz")
    with pytest.raises(DataNotFoundError, match="data_batch_1"):
        load_cifar10(tmp_path)
