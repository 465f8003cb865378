"""MAF tabular loaders on small files written here in MAF's formats (npy, pickle, csv, hdf5).

The expected arrays are computed in the test from MAF's published recipe (written out step by
step here), plus invariants that do not depend on that recipe (row order through the noiseless
time column, split sizes, standardisation).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from survae_flowify.data import DataFormatError, DataNotFoundError, load_dataset, load_tabular

RNG = np.random.default_rng(1)


def _tail(data, frac=0.1):
    n = int(frac * len(data))
    return data[: len(data) - n], data[len(data) - n:]


def test_power(tmp_path):
    n = 200
    raw = RNG.normal(size=(n, 8)) * [1, 5, 2, 7, 3, 3, 3, 0] + [0, 0, 240, 0, 1, 1, 1, 0]
    raw[:, 7] = np.arange(n)  # time: gets no noise, so it reveals the row order
    (tmp_path / "power").mkdir()
    np.save(tmp_path / "power" / "data.npy", raw)
    data = load_dataset("power", tmp_path)
    assert data.kind == "tabular" and data.shape == (6,) and data.metric == "nats"
    assert (len(data.train), len(data.valid), len(data.test)) == (162, 18, 20)
    rows = np.concatenate([data.train, data.valid, data.test]).astype(np.float64)
    # rows are shuffled by RandomState(42): the time column's ranks are that permutation
    perm = np.random.RandomState(42).permutation(n)
    np.testing.assert_array_equal(np.argsort(np.argsort(rows[:, 5])), perm)
    # standardised by train + validation
    both = rows[:180]
    np.testing.assert_allclose(both.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(both.std(0), 1, atol=1e-5)
    # MAF's recipe: shuffle, drop columns 3 and 1, add uniform jitter, split, standardise
    rng = np.random.RandomState(42)
    shuffled = raw.copy()
    rng.shuffle(shuffled)
    kept = shuffled[:, [0, 2, 4, 5, 6, 7]]
    voltage, gap, sub = 0.01 * rng.rand(n, 1), 0.001 * rng.rand(n, 1), rng.rand(n, 3)
    jittered = kept + np.hstack([gap, voltage, sub, np.zeros((n, 1))])
    mu, sd = jittered[:180].mean(0), jittered[:180].std(0)
    np.testing.assert_allclose(rows, (jittered - mu) / sd, rtol=1e-5, atol=1e-5)


def test_power_wrong_columns(tmp_path):
    np.save(tmp_path / "data.npy", np.zeros((10, 5)))
    with pytest.raises(DataFormatError, match=r"\(N, 8\)"):
        load_tabular("power", tmp_path)


def test_gas_drops_correlated_columns(tmp_path):
    n = 300
    sensors = RNG.normal(size=(n, 5))
    frame = pd.DataFrame({
        "Time": np.arange(n), "Meth": RNG.normal(size=n), "Eth": RNG.normal(size=n),
        "s1": sensors[:, 0], "s2": sensors[:, 1],
        "s3": 2 * sensors[:, 0] + 0.01 * RNG.normal(size=n),  # corr(s1, s3) > 0.98
        "s4": sensors[:, 2], "s5": sensors[:, 3], "s6": sensors[:, 4],
    })
    (tmp_path / "gas").mkdir()
    frame.to_pickle(tmp_path / "gas" / "ethylene_CO.pickle")
    data = load_tabular("gas", tmp_path)
    assert data.shape == (5,)  # Meth, Eth, Time and s1 (the first of the correlated pair) gone
    assert (len(data.train), len(data.valid), len(data.test)) == (243, 27, 30)
    kept = frame[["s2", "s3", "s4", "s5", "s6"]].to_numpy()
    expected = (kept - kept.mean(0)) / kept.std(0, ddof=1)  # pandas' std: ddof=1, all rows
    rows = np.concatenate([data.train, data.valid, data.test])
    np.testing.assert_allclose(rows, expected, rtol=1e-5, atol=1e-5)


def test_hepmass(tmp_path):
    n_train, n_test = 120, 40
    cols = ["# label", "f0", "f1", "f2", "f3", "mass"]

    def frame(n, extra):
        values = RNG.normal(size=(n, 5))
        values[:12, 2] = -9.0  # f2: its smallest value occurs 12 > 5 times -> removed
        labels = np.where(np.arange(n) % 3 == 0, 0.0, 1.0)
        df = pd.DataFrame(np.column_stack([labels, values]), columns=cols)
        if extra:
            df["junk"] = 1.0  # the test file's extra last column, dropped as MAF does
        return df

    train, test = frame(n_train, False), frame(n_test, True)
    (tmp_path / "hepmass").mkdir()
    train.to_csv(tmp_path / "hepmass" / "1000_train.csv", index=False)
    test.to_csv(tmp_path / "hepmass" / "1000_test.csv", index=False)
    data = load_tabular("hepmass", tmp_path / "hepmass")
    signal_train = train[train["# label"] == 1][["f0", "f1", "f3", "mass"]].to_numpy()
    signal_test = test[test["# label"] == 1][["f0", "f1", "f3", "mass"]].to_numpy()
    all_train = train[train["# label"] == 1][["f0", "f1", "f2", "f3", "mass"]].to_numpy()
    mu, sd = all_train.mean(0)[[0, 1, 3, 4]], all_train.std(0, ddof=1)[[0, 1, 3, 4]]
    assert data.shape == (4,)
    n_valid = int(0.1 * len(signal_train))
    assert len(data.valid) == n_valid and len(data.train) == len(signal_train) - n_valid
    rows = np.concatenate([data.train, data.valid])
    np.testing.assert_allclose(rows, (signal_train - mu) / sd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.test, (signal_test - mu) / sd, rtol=1e-5, atol=1e-5)


def test_hepmass_column_mismatch(tmp_path):
    df = pd.DataFrame(np.ones((5, 4)), columns=["# label", "a", "b", "c"])
    df.to_csv(tmp_path / "1000_train.csv", index=False)
    df.to_csv(tmp_path / "1000_test.csv", index=False)  # no extra column: one too few after MAF's drop
    with pytest.raises(DataFormatError, match="must match"):
        load_tabular("hepmass", tmp_path)


def test_miniboone(tmp_path):
    raw = RNG.normal(size=(100, 5)) * 3 + 1
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", raw)
    data = load_tabular("miniboone", tmp_path)
    rest, test = _tail(raw)
    train, valid = _tail(rest)
    mu, sd = rest.mean(0), rest.std(0)
    np.testing.assert_allclose(data.train, (train - mu) / sd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.valid, (valid - mu) / sd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.test, (test - mu) / sd, rtol=1e-5, atol=1e-6)


def test_bsds300(tmp_path):
    import h5py

    arrays = {k: RNG.normal(size=(n, 63)) for k, n in (("train", 30), ("validation", 10), ("test", 8))}
    (tmp_path / "BSDS300").mkdir()
    with h5py.File(tmp_path / "BSDS300" / "BSDS300.hdf5", "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    data = load_dataset("bsds300", tmp_path)
    np.testing.assert_allclose(data.train, arrays["train"], rtol=1e-6)
    np.testing.assert_allclose(data.valid, arrays["validation"], rtol=1e-6)
    np.testing.assert_allclose(data.test, arrays["test"], rtol=1e-6)


def test_bsds300_missing_key(tmp_path):
    import h5py

    with h5py.File(tmp_path / "BSDS300.hdf5", "w") as f:
        f.create_dataset("train", data=np.zeros((2, 63)))
    with pytest.raises(DataFormatError, match="validation"):
        load_tabular("bsds300", tmp_path)


@pytest.mark.parametrize("name", ["power", "gas", "hepmass", "miniboone", "bsds300"])
def test_missing_tabular_says_where_and_how(tmp_path, name):
    with pytest.raises(DataNotFoundError) as err:
        load_tabular(name, tmp_path)
    text = str(err.value)
    assert str(tmp_path) in text and "zenodo" in text and name in text


def test_gas_not_a_dataframe(tmp_path):
    pd.DataFrame({"x": [1.0, 2.0]}).to_pickle(tmp_path / "ethylene_CO.pickle")
    with pytest.raises(DataFormatError, match="Meth"):
        load_tabular("gas", tmp_path)
