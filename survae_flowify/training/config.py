"""Training configuration, with the paper's defaults (appendix F)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["SCHEDULE_KEYS", "ConfigError", "TrainConfig"]


class ConfigError(ValueError):
    """A configuration a user can fix (bad value, conflicting options)."""


SCHEDULE_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "max_steps", "seed", "time_budget_s")
"""Keys that fix the data order and the learning-rate schedule: a resumed run must keep them."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Defaults are the paper's (appendix F): Adam, learning rate ``5e-4`` annealed to 0 by a
    cosine schedule over all steps, batch 256. ``batch_size`` is the global batch (split evenly
    over DDP ranks). ``max_steps`` caps the number of steps (and the schedule's length).
    ``eval_samples=K`` adds the importance-weighted bound with ``K`` samples to the test metrics.
    ``checkpoint_every`` (steps, 0: at each epoch's end only) and ``checkpoint_minutes`` set how
    often the checkpoint is refreshed. ``time_budget_s``: train for about this many seconds; the
    schedule's length is set from the speed of the first steps (at most ``epochs`` epochs and
    ``max_steps`` steps), so results then depend on the machine's speed.
    """

    epochs: int = 10
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.0
    clip_grad: float | None = None
    max_steps: int | None = None
    eval_batch_size: int | None = None
    eval_samples: int | None = None
    valid_every: int = 1
    log_every: int = 10
    checkpoint_every: int = 0
    checkpoint_minutes: float = 10.0
    time_budget_s: float | None = None
    seed: int = 0
    quiet: bool = False
    plots: bool = True
    plot_samples: int = 64

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "log_every", "plot_samples")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_steps", "eval_batch_size", "eval_samples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
        for name in ("valid_every", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr!r}")
        budget = self.time_budget_s
        if budget is not None and not (math.isfinite(budget) and budget > 0):
            raise ConfigError(f"time_budget_s must be a positive number, got {self.time_budget_s!r}")
        if self.weight_decay < 0 or (self.clip_grad is not None and not self.clip_grad > 0):
            raise ConfigError("weight_decay must be >= 0 and clip_grad > 0 (or None)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
