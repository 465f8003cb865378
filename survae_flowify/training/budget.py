"""A time budget: how many steps fit in the seconds that are left, re-estimated as training goes.

The schedule's length ``T`` (the cosine's period) is what the estimate sets. It is measured
again every :data:`REESTIMATE_EVERY` steps from the speed of the most recent steps, so a run
whose first steps were slow (a loaded machine, warm-up) or fast still ends close to its budget:
``T = t + ⌊remaining seconds · recent steps per second⌋``, capped by ``epochs``/``max_steps``
when they were given. The run stops when the budget is spent, whatever the last estimate was.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["REESTIMATE_EVERY", "SPEED_WINDOW", "TimeBudget"]

REESTIMATE_EVERY = 10
"""Steps between two estimates (each is one all-reduce under DDP)."""

SPEED_WINDOW = 100
"""Steps over which the speed is measured: recent enough to follow the machine's load."""


class TimeBudget:
    """Tracks the time spent against ``budget_s`` and proposes the schedule's length.

    ``spent_s`` is what earlier invocations of the same run used (a resumed run continues its
    budget); ``cap`` is the most steps the run may take (``None``: no cap).
    """

    def __init__(self, budget_s: float, *, spent_s: float = 0.0, cap: int | None = None) -> None:
        self.budget_s, self.spent_before, self.cap = budget_s, spent_s, cap
        self._started: float | None = None
        self._marks: deque[tuple[int, float]] = deque(maxlen=SPEED_WINDOW + 1)

    def start(self, step: int, now: float) -> None:
        """Training (re)starts at ``step`` at clock time ``now``."""
        self._started = now
        self._marks.clear()
        self._marks.append((step, now))

    def spent(self, now: float) -> float:
        """Seconds of the budget used so far, this invocation included."""
        return self.spent_before + (now - self._started if self._started is not None else 0.0)

    def record(self, step: int, now: float) -> bool:
        """Note that ``step`` steps are done at ``now``; true when a new estimate is due."""
        self._marks.append((step, now))
        return step % REESTIMATE_EVERY == 0

    def estimate(self, step: int, now: float) -> int:
        """The total number of steps that fits the budget at the speed of the recent steps."""
        remaining = self.budget_s - self.spent(now)
        if remaining <= 0:
            return step
        (s0, t0), (s1, t1) = self._marks[0], self._marks[-1]
        if s1 > s0 and t1 > t0:
            total = step + math.floor(remaining * (s1 - s0) / (t1 - t0))
        else:  # no measurable time yet (a coarse clock): look again after the next steps
            total = step + REESTIMATE_EVERY
        return min(total, self.cap) if self.cap is not None else total
