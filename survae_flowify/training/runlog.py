"""The run log: ``metrics.jsonl`` records, the progress bar and the lines printed for people.

Only the main rank writes. ``metrics.jsonl`` holds one JSON object per line: ``split="train"``
every ``log_every`` steps (``step``, ``epoch``, ``loss`` = mean negative log-likelihood bound in
nats over the steps since the last record, the same as ``bpd`` or ``nats``, ``lr`` of the last
step, ``grad_norm``), ``split="valid"`` after each epoch, ``split="test"`` at the end,
``split="error"`` on divergence.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from survae_flowify.data.base import DataSplits
from survae_flowify.training.evaluation import nll_to_metric
from survae_flowify.training.records import MetricsLog, read_jsonl, rewrite_jsonl

__all__ = ["RunLog"]


class RunLog:
    """Metrics, progress and messages of one run in ``out`` (silent on ranks other than 0)."""

    def __init__(self, out: Path, data: DataSplits, *, main: bool, quiet: bool, title: str) -> None:
        self.data, self.main, self.quiet, self.title = data, main, quiet, title
        self.metrics = MetricsLog(out / "metrics.jsonl") if main else None
        self._bar: Any = None

    @property
    def unit(self) -> str:
        return "bits/dim" if self.data.metric == "bpd" else "nats"

    def records(self) -> list[dict[str, Any]]:
        """Every record written so far."""
        if self.metrics is None or not self.metrics.path.exists():
            return []
        return read_jsonl(self.metrics.path)

    def trim(self, step: int) -> None:
        """Drop records written after ``step`` (a crash after the checkpoint), so steps stay unique."""
        if self.metrics is not None and self.metrics.path.exists():
            rewrite_jsonl(self.metrics.path, [r for r in self.records() if int(r.get("step", 0)) <= step])

    def record(self, **record: Any) -> None:
        if self.metrics is not None:
            self.metrics.write(**record)

    # ---------------------------------------------------------------- progress
    def open_progress(self, *, total: int | None, initial: int) -> None:
        """A tqdm bar on stderr when it is a terminal (and not quiet), a no-op bar otherwise."""
        from tqdm.auto import tqdm

        show = self.main and not self.quiet and sys.stderr.isatty()
        self._bar = tqdm(total=total, initial=initial, disable=not show, unit="step",
                         dynamic_ncols=True, file=sys.stderr, desc=self.title)

    def advance(self) -> None:
        self._bar.update(1)

    def set_total(self, total: int) -> None:
        if self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()

    def close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def say(self, text: str) -> None:
        """A line for people: through tqdm when its bar is shown, on stderr otherwise."""
        if not self.main or self.quiet:
            return
        if self._bar is None or getattr(self._bar, "disable", True):
            print(text, file=sys.stderr, flush=True)
        else:
            self._bar.write(text, file=sys.stderr)

    # ----------------------------------------------------------------- records
    def train(self, *, step: int, epoch: int, losses: list[float], lr: float, grad_norm: float) -> None:
        """The training record of the steps since the last one (mean loss)."""
        loss = sum(losses) / len(losses)
        value = nll_to_metric(loss, self.data)
        self.record(split="train", step=step, epoch=epoch, loss=loss, **{self.data.metric: value},
                    lr=lr, grad_norm=grad_norm)
        if self._bar is not None:
            self._bar.set_postfix({self.data.metric: f"{value:.4f}", "lr": f"{lr:.2e}"}, refresh=False)

    def valid(self, *, step: int, epoch: int, nll: float, announce: bool) -> None:
        value = nll_to_metric(nll, self.data)
        self.record(split="valid", step=step, epoch=epoch, loss=nll, **{self.data.metric: value})
        if announce:
            self.say(f"epoch {epoch}: validation {value:.4f} {self.unit}")
