"""Class labels from the loaders: digits (scikit-learn), IDX label files, CIFAR-10 batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from survae_flowify.data import (
    DataFormatError,
    DataSplits,
    SplitLabels,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    read_cifar_labels,
)
from tests.data.writers import write_cifar_batch, write_cifar_dir, write_idx, write_idx_set

RNG = np.random.default_rng(1)


def test_digits_labels_are_the_digit_of_each_image():
    from sklearn.datasets import load_digits as sk

    data = load_digits()
    assert data.num_classes == 10
    for split in ("train", "valid", "test"):
        labels = getattr(data.labels, split)
        assert labels.dtype == torch.int64 and labels.shape == (len(getattr(data, split)),)
    # every (image, label) pair of scikit-learn's exactly once: compare the sorted pairs
    images = torch.cat([data.train, data.valid, data.test]).reshape(-1, 64).numpy()
    ours = np.concatenate([images, torch.cat(list(data.labels)).numpy()[:, None]], axis=1)
    ref = sk()
    theirs = np.concatenate([ref.images.reshape(-1, 64), ref.target[:, None]], axis=1).astype(np.int64)
    np.testing.assert_array_equal(ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)])
    assert sorted(torch.cat(list(data.labels)).unique().tolist()) == list(range(10))


@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_labels_follow_the_images(tmp_path, loader, gz):
    train = RNG.integers(0, 256, (30, 5, 5), dtype=np.uint8)
    test = RNG.integers(0, 256, (7, 5, 5), dtype=np.uint8)
    y_train = RNG.integers(0, 10, 30).astype(np.uint8)
    y_test = RNG.integers(0, 10, 7).astype(np.uint8)
    write_idx_set(tmp_path, train, test, gz=gz, train_labels=y_train, test_labels=y_test)
    data = loader(tmp_path)
    assert data.num_classes == 10
    # validation = the last tenth of the training file, labels cut at the same place
    np.testing.assert_array_equal(data.labels.train.numpy(), y_train[:27])
    np.testing.assert_array_equal(data.labels.valid.numpy(), y_train[27:])
    np.testing.assert_array_equal(data.labels.test.numpy(), y_test)
    assert data.labels.train.dtype == torch.int64


def test_idx_without_label_files_still_loads_without_labels(tmp_path):
    write_idx_set(tmp_path, np.ones((20, 4, 4), np.uint8), np.ones((3, 4, 4), np.uint8), labels=False)
    data = load_mnist(tmp_path)
    assert data.labels is None and data.num_classes is None and len(data.test) == 3
    assert "classes" not in str(data)


def test_idx_labels_malformed(tmp_path):
    write_idx_set(tmp_path, np.ones((20, 4, 4), np.uint8), np.ones((3, 4, 4), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))  # 5 labels, 3 images
    with pytest.raises(DataFormatError, match=r"expected 3 uint8 labels"):
        load_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(3, 12, np.uint8))  # class 12 of 10
    with pytest.raises(DataFormatError, match=r"0 … 9"):
        load_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataFormatError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_cifar_labels(tmp_path):
    labels: dict[str, np.ndarray] = {}
    write_cifar_dir(tmp_path, 20, RNG, labels=labels)
    data = load_cifar10(tmp_path)
    train = np.concatenate([labels[f"data_batch_{i}"] for i in range(1, 6)])
    assert data.num_classes == 10
    np.testing.assert_array_equal(torch.cat([data.labels.train, data.labels.valid]).numpy(), train)
    np.testing.assert_array_equal(data.labels.test.numpy(), labels["test_batch"])


def test_cifar_labels_malformed(tmp_path):
    images = np.zeros((3, 3, 32, 32), np.uint8)
    write_cifar_batch(tmp_path / "b", images, [1, 2, 3])
    np.testing.assert_array_equal(read_cifar_labels(tmp_path / "b"), [1, 2, 3])
    write_cifar_batch(tmp_path / "short", images, [1, 2])
    with pytest.raises(DataFormatError, match="3 integers"):
        read_cifar_labels(tmp_path / "short")


def test_subset_cuts_the_labels_with_the_images():
    data = load_digits().subset(25)
    assert [len(y) for y in data.labels] == [25, 25, 25]
    np.testing.assert_array_equal(data.labels.test.numpy(), load_digits().labels.test[:25].numpy())
    assert str(data).endswith("10 classes")


def test_splits_refuse_mismatched_labels():
    x = torch.zeros(4, 2)
    good = torch.zeros(4, dtype=torch.int64)
    with pytest.raises(DataFormatError, match=r"shape \(4,\)"):
        DataSplits("v", "toy", x, x, x, labels=SplitLabels(good, good, good[:3]), num_classes=2)
    with pytest.raises(DataFormatError, match="int64"):
        DataSplits("v", "toy", x, x, x, labels=SplitLabels(good, good, good.int()), num_classes=2)
    with pytest.raises(DataFormatError, match="go together"):
        DataSplits("v", "toy", x, x, x, num_classes=2)
    with pytest.raises(DataFormatError, match=r"0 … 1"):
        DataSplits("v", "toy", x, x, x, labels=SplitLabels(good, good, good + 2), num_classes=2)
