"""Run outputs that must not be half-written: JSON files written atomically, metrics as JSON lines."""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "atomic_write", "read_jsonl", "rewrite_jsonl", "write_json"]


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], *, binary: bool) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file in the same directory, flush
    it to disk, then ``os.replace`` it: readers see the old file or the new one, never a torn one.

    The file gets the permissions of any file this process creates (``0o666`` less the umask),
    like the run's other outputs, not the ``0o600`` of :func:`tempfile.mkstemp`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new, exclusively created file beside ``path``; the kernel applies the umask to ``0o666``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # a name drawn twice: draw again
            continue


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(_clean(data), indent=2) + "\n"), binary=False)


class MetricsLog:
    """Appends one JSON object per line to ``path`` (``metrics.jsonl``), flushed at each record."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(_clean(record)) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSON-lines file (a torn last line, from a crash, is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def rewrite_jsonl(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Replace a JSON-lines file by ``records``, atomically."""
    text = "".join(json.dumps(_clean(r)) + "\n" for r in records)
    atomic_write(path, lambda f: f.write(text), binary=False)
