"""When the training checkpoint is written, and whether a checkpoint's schedule fits a run.

The file format (and its validation) is :mod:`survae_flowify.training.checkpoint`; this module
decides *when*: every ``checkpoint_every`` steps (when set), whenever ``checkpoint_minutes``
have passed since the last one, at each epoch's end, on a stop request and at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from survae_flowify.training.checkpoint import CheckpointError, save_checkpoint
from survae_flowify.training.config import SCHEDULE_KEYS, TrainConfig

__all__ = ["Checkpointer", "check_same_schedule"]


class Checkpointer:
    """Writes ``path`` (main rank only) and remembers the last step saved."""

    def __init__(self, path: Path, config: TrainConfig, *, main: bool) -> None:
        self.path, self.main = path, main
        self.every_steps, self.every_s = config.checkpoint_every, 60.0 * config.checkpoint_minutes
        self.last_saved_step: int | None = None
        self._last_time = 0.0

    def start(self, now: float) -> None:
        """Training (re)starts: the time-based interval counts from ``now``."""
        self._last_time = now

    def due(self, step: int, now: float) -> bool:
        by_steps = self.every_steps > 0 and step % self.every_steps == 0
        return by_steps or now - self._last_time > self.every_s

    def save(self, payload: dict[str, Any], *, step: int, now: float) -> None:
        if self.main:
            save_checkpoint(self.path, payload)
        self.last_saved_step, self._last_time = step, now

    def kept(self) -> str:
        """What a failed run leaves behind, for its message."""
        if self.last_saved_step is None:
            return "no checkpoint had been written yet"
        return (f"the last good checkpoint, {self.path} (step {self.last_saved_step}), "
                "is left untouched")


def check_same_schedule(saved: dict[str, Any], config: TrainConfig) -> None:
    """Raise :class:`CheckpointError` unless ``config`` keeps the checkpoint's schedule
    (:data:`~survae_flowify.training.config.SCHEDULE_KEYS`: data order and learning rates)."""
    clash = [k for k in SCHEDULE_KEYS if k in saved and saved[k] != getattr(config, k)]
    if clash:
        detail = ", ".join(f"{k}: checkpoint {saved[k]!r}, now {getattr(config, k)!r}" for k in clash)
        raise CheckpointError(f"cannot resume with a different schedule ({detail})")
