"""Where data sets are looked for: ``--data-dir``, ``$SURVAE_FLOWIFY_DATA`` and defaults."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from survae_flowify.data.base import DataNotFoundError

__all__ = ["DATA_ENV", "candidates", "locate"]

DATA_ENV = "SURVAE_FLOWIFY_DATA"
"""Environment variable naming a root directory that holds one subdirectory per data set."""


def candidates(
    data_dir: str | os.PathLike | None, subdirs: Sequence[str], defaults: Sequence[str]
) -> list[Path]:
    """Directories to try, in order.

    With ``data_dir``: that directory, then ``data_dir/<subdir>`` for each known subdirectory
    name. Without: ``$SURVAE_FLOWIFY_DATA/<subdir>`` when the variable is set, then ``defaults``.
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser().absolute()
        return [root, *(root / s for s in subdirs)]
    out = []
    env = os.environ.get(DATA_ENV)
    if env:
        out += [Path(env).expanduser().absolute() / s for s in subdirs]
    out += [Path(d).expanduser().absolute() for d in defaults]
    return out


def locate(
    name: str,
    places: Sequence[Path],
    found: Callable[[Path], bool],
    *,
    expected: str,
    how: str,
) -> Path:
    """The first directory in ``places`` for which ``found(dir)`` holds, else a
    :class:`DataNotFoundError` listing every place looked in."""
    for place in places:
        if place.is_dir() and found(place):
            return place
    raise DataNotFoundError(name, places, expected, how)
