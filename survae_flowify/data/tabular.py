"""The five tabular sets of MAF (Papamakarios et al., 2017) from its preprocessed files.

Download ``data.tar.gz`` from https://zenodo.org/record/1161203 and extract it; the ``data``
directory then holds ``power/data.npy``, ``gas/ethylene_CO.pickle``,
``hepmass/1000_train.csv`` and ``1000_test.csv``, ``miniboone/data.npy`` and
``BSDS300/BSDS300.hdf5``. Each loader reproduces MAF's preprocessing and splits, so numbers are
comparable with the literature (MAF, NSF, and the flowification paper's appendix F):

* POWER: shuffle with ``RandomState(42)``, drop columns 3 and 1, add uniform jitter (0.001 to
  the active power, 0.01 to the voltage, 1 to the three sub-meterings, 0 to the time), test =
  last 10 %, validation = last 10 % of the rest, standardise by train+validation (6 dims).
* GAS: drop ``Meth``, ``Eth``, ``Time``; repeatedly drop the first column correlated above 0.98
  with another; standardise (pandas, ``ddof=1``); test = last 10 %, validation = last 10 % of
  the rest (8 dims).
* HEPMASS: keep signal rows (label 1), drop the label (and the test file's last column),
  standardise by the training set (``ddof=1``), drop features whose smallest value occurs more
  than 5 times in the training set; validation = last 10 % of train (21 dims).
* MINIBOONE: test = last 10 %, validation = last 10 % of the rest, standardise by
  train+validation (43 dims).
* BSDS300: the ``train``, ``validation`` and ``test`` arrays of the HDF5 file (63 dims).

Every split is a float32 tensor ``(N, D)``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from survae_flowify.data._locate import candidates, locate
from survae_flowify.data.base import DataFormatError, DataSplits

__all__ = [
    "TABULAR_FILES",
    "TABULAR_NAMES",
    "load_tabular",
    "preprocess_bsds300",
    "preprocess_gas",
    "preprocess_hepmass",
    "preprocess_miniboone",
    "preprocess_power",
]

Splits = tuple[np.ndarray, np.ndarray, np.ndarray]

TABULAR_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    "power": ("power", ("data.npy",)),
    "gas": ("gas", ("ethylene_CO.pickle",)),
    "hepmass": ("hepmass", ("1000_train.csv", "1000_test.csv")),
    "miniboone": ("miniboone", ("data.npy",)),
    "bsds300": ("BSDS300", ("BSDS300.hdf5",)),
}
"""Per data set: MAF's subdirectory name and the files it needs there."""

TABULAR_NAMES: tuple[str, ...] = tuple(TABULAR_FILES)

_HOW = (
    "Download MAF's preprocessed data (data.tar.gz, https://zenodo.org/record/1161203), "
    "extract it and pass --data-dir pointing at the extracted 'data' directory (which holds "
    "power/, gas/, hepmass/, miniboone/ and BSDS300/) or at the data set's own directory."
)


def _tail_split(data: np.ndarray) -> Splits:
    """Test = last 10 %; validation = last 10 % of what remains; train = the rest."""
    n_test = int(0.1 * data.shape[0])
    rest, test = data[: data.shape[0] - n_test], data[data.shape[0] - n_test:]
    n_valid = int(0.1 * rest.shape[0])
    return rest[: rest.shape[0] - n_valid], rest[rest.shape[0] - n_valid:], test


def _standardise_by_train_valid(train: np.ndarray, valid: np.ndarray, test: np.ndarray) -> Splits:
    both = np.vstack((train, valid))
    mu, sd = both.mean(axis=0), both.std(axis=0)
    return (train - mu) / sd, (valid - mu) / sd, (test - mu) / sd


def _load_npy(path: Path, columns: int | None = None) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{path}: not a readable .npy array ({err})") from err
    if data.ndim != 2 or (columns is not None and data.shape[1] != columns):
        want = f"(N, {columns})" if columns else "(N, D)"
        raise DataFormatError(f"{path}: expected an array of shape {want}, got {data.shape}")
    return data.astype(np.float64)


def preprocess_power(data: np.ndarray) -> Splits:
    """MAF's POWER pipeline on the 8-column ``data.npy`` array (see the module docstring)."""
    rng = np.random.RandomState(42)
    data = data.copy()
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, [1, 3], axis=1)  # reactive power, intensity
    voltage_noise = 0.01 * rng.rand(n, 1)
    gap_noise = 0.001 * rng.rand(n, 1)
    sm_noise = rng.rand(n, 3)
    noise = np.hstack((gap_noise, voltage_noise, sm_noise, np.zeros((n, 1))))
    return _standardise_by_train_valid(*_tail_split(data + noise))


def preprocess_miniboone(data: np.ndarray) -> Splits:
    """MAF's MINIBOONE pipeline: tail splits, standardised by train+validation."""
    return _standardise_by_train_valid(*_tail_split(data))


def preprocess_gas(frame: object) -> Splits:
    """MAF's GAS pipeline on the ``ethylene_CO`` pandas DataFrame."""
    data = frame.drop(columns=["Meth", "Eth", "Time"])
    while True:
        counts = (data.corr() > 0.98).to_numpy().sum(axis=1)
        if not (counts > 1).any():
            break
        data = data.drop(columns=data.columns[int(np.argmax(counts > 1))])
    data = (data - data.mean()) / data.std()
    return _tail_split(data.to_numpy(dtype=np.float64))


def _smallest_value_count(column: np.ndarray) -> int:
    counts = Counter(column.tolist())
    return counts[min(counts)]


def preprocess_hepmass(train_frame: object, test_frame: object) -> Splits:
    """MAF's HEPMASS pipeline on the two ``1000_*.csv`` DataFrames."""
    train = train_frame[train_frame.iloc[:, 0] == 1].iloc[:, 1:].to_numpy(dtype=np.float64)
    test = test_frame[test_frame.iloc[:, 0] == 1].iloc[:, 1:-1].to_numpy(dtype=np.float64)
    if train.shape[1] != test.shape[1]:
        raise DataFormatError(
            f"HEPMASS: the training file has {train.shape[1]} feature columns and the test file "
            f"{test.shape[1]} (after dropping its last column as MAF does); they must match"
        )
    mu, sd = train.mean(axis=0), train.std(axis=0, ddof=1)
    train, test = (train - mu) / sd, (test - mu) / sd
    keep = [j for j in range(train.shape[1]) if _smallest_value_count(train[:, j]) <= 5]
    train, test = train[:, keep], test[:, keep]
    n_valid = int(0.1 * train.shape[0])
    return train[: train.shape[0] - n_valid], train[train.shape[0] - n_valid:], test


def preprocess_bsds300(path: Path) -> Splits:
    """The three arrays of MAF's ``BSDS300.hdf5``."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return tuple(np.asarray(f[k], dtype=np.float64) for k in ("train", "validation", "test"))
    except (OSError, KeyError) as err:
        raise DataFormatError(
            f"{path}: expected an HDF5 file with datasets train, validation, test ({err})"
        ) from err


def _read_power(d: Path) -> Splits:
    return preprocess_power(_load_npy(d / "data.npy", columns=8))


def _read_gas(d: Path) -> Splits:
    import pandas as pd

    path = d / "ethylene_CO.pickle"
    try:
        frame = pd.read_pickle(path)
        return preprocess_gas(frame)
    except (OSError, ValueError, KeyError, AttributeError, EOFError) as err:
        raise DataFormatError(
            f"{path}: expected a pickled pandas DataFrame with columns Meth, Eth, Time and the "
            f"sensor readings ({type(err).__name__}: {err})"
        ) from err


def _read_hepmass(d: Path) -> Splits:
    import pandas as pd

    try:
        train = pd.read_csv(d / "1000_train.csv", index_col=False)
        test = pd.read_csv(d / "1000_test.csv", index_col=False)
    except (OSError, ValueError) as err:
        raise DataFormatError(f"{d}: cannot read HEPMASS csv files ({err})") from err
    return preprocess_hepmass(train, test)


def _read_miniboone(d: Path) -> Splits:
    return preprocess_miniboone(_load_npy(d / "data.npy"))


def _read_bsds300(d: Path) -> Splits:
    return preprocess_bsds300(d / "BSDS300.hdf5")


_READERS: dict[str, Callable[[Path], Splits]] = {
    "power": _read_power,
    "gas": _read_gas,
    "hepmass": _read_hepmass,
    "miniboone": _read_miniboone,
    "bsds300": _read_bsds300,
}


def load_tabular(name: str, data_dir: str | os.PathLike | None = None) -> DataSplits:
    """Load MAF tabular set ``name`` (one of :data:`TABULAR_NAMES`) with its preprocessing.

    Looks in ``data_dir`` and ``data_dir/<subdir>``; without ``data_dir``, in
    ``$SURVAE_FLOWIFY_DATA/<subdir>`` and ``data/<subdir>``.
    """
    if name not in _READERS:
        raise ValueError(f"unknown tabular data set {name!r}; choose one of: {', '.join(TABULAR_NAMES)}")
    subdir, files = TABULAR_FILES[name]
    places = candidates(data_dir, (subdir, f"data/{subdir}"), [f"data/{subdir}", f"data/maf/{subdir}"])
    directory = locate(
        name, places, lambda d: all((d / f).is_file() for f in files),
        expected=" and ".join(files), how=_HOW,
    )
    arrays = _READERS[name](directory)
    train, valid, test = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in arrays)
    if not all(bool(torch.isfinite(t).all()) for t in (train, valid, test)):
        raise DataFormatError(f"{directory}: {name} contains non-finite values after preprocessing")
    return DataSplits(name, "tabular", train, valid, test)
