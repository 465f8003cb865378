"""The paper's learning-rate schedule (appendix F): cosine annealing to zero."""

from __future__ import annotations

import math

from torch.optim import Optimizer

__all__ = ["cosine_lr", "set_lr"]


def cosine_lr(step: int, total_steps: int, base_lr: float) -> float:
    r"""``lr(t) = lr₀ · ½ (1 + cos(π t / T))`` for ``0 ≤ t ≤ T``, and 0 beyond ``T``.

    A pure function of the step, so a resumed run follows exactly the schedule of an
    uninterrupted one.
    """
    if total_steps <= 0:
        return base_lr
    t = min(max(step, 0), total_steps) / total_steps
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * t))


def set_lr(optimizer: Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
