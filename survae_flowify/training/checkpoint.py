"""Checkpoints: written atomically, read back with validation and clear errors.

A checkpoint is a ``torch.save`` dict of tensors and plain values only (it loads with
``weights_only=True``)::

    format      "survae-flowify-checkpoint"      version  1
    spec        {"model", "dataset", "data_shape", "levels", "model_options"}  (how to rebuild)
    model       flow.state_dict()                optimizer  optimizer.state_dict()
    step        optimizer steps taken            epoch, batch_in_epoch  where the data order is
    total_steps length of the cosine schedule    config   the training configuration
    rng         {"torch": CPU generator state, "cuda": [per-device states]}
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from survae_flowify.training.records import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "load_checkpoint",
    "load_model_state",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "survae-flowify-checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED = ("spec", "model", "optimizer", "step", "epoch", "batch_in_epoch", "total_steps", "config")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, not ours, or does not fit the model it is loaded into."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus format and version) to ``path`` atomically: a temporary file in the
    same directory, flushed, then renamed over the old checkpoint."""
    data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    buffer = io.BytesIO()
    torch.save(data, buffer)
    atomic_write(path, lambda f: f.write(buffer.getbuffer()), binary=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint (on the CPU); raise :class:`CheckpointError` otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} is not a survae-flowify checkpoint: it is corrupt or holds objects other than "
            "tensors and plain values"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        first = str(err).strip().split(".")[0][:200] or type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): {first}"
        ) from err
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a survae-flowify checkpoint")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {data.get('version')!r}; this version of "
            f"survae-flowify reads version {CHECKPOINT_VERSION}"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {', '.join(missing)}")
    data["path"] = str(path)
    return data


def load_model_state(module: nn.Module, state: dict[str, Any], *, source: str = "checkpoint") -> None:
    """``module.load_state_dict(state)`` (strict) with a :class:`CheckpointError` that says which
    parameters are missing, unexpected, or of the wrong shape."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                shown = ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
                parts.append(f"{len(keys)} {label}: {shown}")
        raise CheckpointError(
            f"{source} does not fit this model ({'; '.join(parts)}); was it written for another "
            "model or data set?"
        )
    module.load_state_dict(state)
