"""The embedded data sets (scikit-learn digits, procedural 2-D densities) and the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from survae_flowify.data import (
    DATASET_INFO,
    DATASET_NAMES,
    TOY_NAMES,
    load_dataset,
    load_digits,
    sample_toy,
)


def test_digits_splits_are_a_fixed_partition():
    from sklearn.datasets import load_digits as sk

    data = load_digits()
    assert data.levels == 17 and data.shape == (1, 8, 8) and data.train.dtype == torch.uint8
    assert (len(data.train), len(data.valid), len(data.test)) == (1257, 180, 360)
    assert int(data.train.max()) == 16 and int(data.train.min()) == 0
    ours = torch.cat([data.train, data.valid, data.test]).reshape(-1, 64).numpy()
    reference = sk().images.reshape(-1, 64).astype(np.uint8)
    # the union is every image exactly once (compare as sorted rows)
    np.testing.assert_array_equal(ours[np.lexsort(ours.T)], reference[np.lexsort(reference.T)])
    assert torch.equal(load_digits().test, data.test)  # same split every time


@pytest.mark.parametrize("name", TOY_NAMES)
def test_toy_densities(name):
    a, b = sample_toy(name, 500, seed=3), sample_toy(name, 500, seed=3)
    assert a.shape == (500, 2) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, sample_toy(name, 500, seed=4))
    assert bool(torch.isfinite(a).all()) and float(a.abs().max()) < 6
    assert float(a.std(0).min()) > 0.3  # spread out, not collapsed


def test_checkerboard_only_dark_squares():
    x = sample_toy("checkerboard", 4000) / 2  # unit squares on [-2, 2]^2
    parity = (torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2
    assert bool((parity == parity[0]).all())


def test_toy_splits_differ():
    data = load_dataset("moons")
    assert data.kind == "toy" and data.metric == "nats"
    assert not torch.equal(data.train[:10], data.test[:10])


def test_registry_matches_loaded_shapes():
    assert set(DATASET_INFO) == set(DATASET_NAMES)
    for name in ("digits", "moons"):
        data = load_dataset(name)
        assert data.shape == DATASET_INFO[name].shape and data.levels == DATASET_INFO[name].levels


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match="choose one of: digits, fashion-mnist"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="moons"):
        sample_toy("donut", 3)


def test_subset():
    data = load_digits().subset(10)
    assert len(data.train) == len(data.valid) == len(data.test) == 10
    with pytest.raises(ValueError):
        data.subset(0)
