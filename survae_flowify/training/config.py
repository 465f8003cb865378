"""Training configuration, with the paper's defaults (appendix F)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from survae_flowify import _checks

__all__ = ["DEFAULT_EPOCHS", "MAX_SEED", "SCHEDULE_KEYS", "ConfigError", "TrainConfig"]


class ConfigError(ValueError):
    """A configuration a user can fix (bad value, conflicting options)."""


SCHEDULE_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "max_steps", "seed", "time_budget_s")
"""Keys that fix the data order and the learning-rate schedule: a resumed run must keep them."""

DEFAULT_EPOCHS = 10
"""Epochs of a run that sets neither ``epochs`` nor ``time_budget_s``."""

MAX_SEED = 2**32 - 1
"""Largest seed: seeds are offset per rank and per step and must stay within torch's 64-bit range."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Defaults are the paper's (appendix F): Adam, learning rate ``5e-4`` annealed to 0 by a
    cosine schedule over all steps, batch 256. ``batch_size`` is the global batch (split evenly
    over DDP ranks). ``epochs`` (default :data:`DEFAULT_EPOCHS`) and ``max_steps`` cap the
    number of steps and fix the schedule's length. ``eval_samples=K`` adds the
    importance-weighted bound with ``K`` samples to the test metrics. ``checkpoint_every`` (steps,
    0: at each epoch's end only) and ``checkpoint_minutes`` (> 0) set how often the checkpoint is
    refreshed. ``time_budget_s``: train for this many seconds (at least 90% of it); the schedule's
    length is re-estimated from the measured speed as training goes, capped only by an explicit
    ``epochs`` or ``max_steps``, so results then depend on the machine's speed and load.
    ``compile``: run the loss and its backward through ``torch.compile`` (the first step
    compiles; the optimizer step stays eager, since its learning rate changes every step).
    """

    epochs: int | None = None
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
    compile: bool = False

    def __post_init__(self) -> None:
        try:
            self._check()
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from err

    def _check(self) -> None:
        owner = "TrainConfig"
        for name in ("batch_size", "log_every", "plot_samples"):
            _checks.positive_int(owner, name, getattr(self, name))
        for name in ("epochs", "max_steps", "eval_batch_size", "eval_samples"):
            if getattr(self, name) is not None:
                _checks.positive_int(owner, name, getattr(self, name))
        for name in ("valid_every", "checkpoint_every"):
            _checks.integer(owner, name, getattr(self, name), minimum=0)
        _checks.integer(owner, "seed", self.seed, minimum=0, maximum=MAX_SEED)
        for name in ("lr", "checkpoint_minutes"):
            _checks.positive_float(owner, name, getattr(self, name))
        for name in ("clip_grad", "time_budget_s"):
            if getattr(self, name) is not None:
                _checks.positive_float(owner, name, getattr(self, name))
        _checks.finite_float(owner, "weight_decay", self.weight_decay, minimum=0.0)
        for name in ("quiet", "plots", "compile"):
            _checks.boolean(owner, name, getattr(self, name))

    @property
    def epoch_cap(self) -> int | None:
        """The most epochs to train: ``epochs``, or :data:`DEFAULT_EPOCHS` without a time budget,
        or none (``None``) under a time budget that sets no ``epochs``."""
        if self.epochs is not None:
            return self.epochs
        return None if self.time_budget_s is not None else DEFAULT_EPOCHS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output (unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
