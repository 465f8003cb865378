"""The training loop: minimise the mean negative ELBO ``−E[log p(x)]`` of any :class:`Flow`.

One :class:`Trainer` runs one training job: Adam with the cosine schedule of
:func:`~survae_flowify.training.schedule.cosine_lr`, epochs drawn by ``DistributedSampler`` (a
single process is world size 1), validation after each epoch. Its helpers each do one job:
:mod:`~survae_flowify.training.checkpointing` (when to save), :mod:`~survae_flowify.training.runlog`
(metrics, progress, messages), :mod:`~survae_flowify.training.budget` (the schedule's length
under a time budget) and :mod:`~survae_flowify.training.report` (test metrics, figures,
``summary.json``). Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves and stops; a
non-finite loss or gradient stops without touching the last good checkpoint.

Training steps run with the layers' input checks off (:func:`survae_flowify.validation`): the
data and one probe batch are checked once at the start, and a blow-up then reaches the loss as a
non-finite value (the "diverged" outcome) instead of an input error deep inside the flow. It
also spares the checks' device synchronisations (one per checked call) at every step.

``TrainConfig(compile=True)`` (``survae-flowify train --compile``) runs each step's loss and its
backward through ``torch.compile``; with the input checks off the flows trace without graph
breaks (``benchmarks/speed.py`` counts them).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data.distributed import DistributedSampler

from survae_flowify import _state
from survae_flowify.algebra import Flow
from survae_flowify.data.base import DataSplits
from survae_flowify.training.budget import TimeBudget
from survae_flowify.training.checkpoint import CheckpointError, load_model_state
from survae_flowify.training.checkpointing import Checkpointer, check_same_schedule
from survae_flowify.training.config import ConfigError, TrainConfig
from survae_flowify.training.distributed import DistContext
from survae_flowify.training.evaluation import (
    evaluate,
    log_prob,
    nll_to_metric,
    parameter_count,
    split_context,
)
from survae_flowify.training.optim import adam
from survae_flowify.training.report import final_summary
from survae_flowify.training.runlog import RunLog
from survae_flowify.training.schedule import cosine_lr, set_lr
from survae_flowify.training.signals import StopSignals

__all__ = ["RunResult", "Trainer", "check_data_fits", "evaluate", "nll_to_metric", "parameter_count"]

Status = Literal["finished", "paused", "interrupted", "diverged"]
_RANK_SEED_STRIDE = 7919  # a prime: distinct noise streams per rank
_UNBOUNDED = 2**62  # the schedule's length under a time budget before its first estimate


def check_data_fits(data: DataSplits, config: TrainConfig, *, world_size: int = 1) -> None:
    """Raise :class:`ConfigError` unless every split has an example (the training split one per
    process) and the batch can be split over the processes: checked before a run creates anything."""
    sizes = {"train": len(data.train), "valid": len(data.valid), "test": len(data.test)}
    if sizes["train"] < world_size or min(sizes.values()) < 1:
        counts = ", ".join(f"{k} {v}" for k, v in sizes.items())
        per_process = f" (train: one per process, {world_size})" if world_size > 1 else ""
        raise ConfigError(f"data set {data.name!r} is too small to train on: {counts} examples; "
                          f"every split needs at least one{per_process}")
    if config.batch_size < world_size:
        raise ConfigError(f"batch size {config.batch_size} is smaller than the number of processes "
                          f"{world_size}; the batch is split over processes")


class _NegativeLogLikelihood(nn.Module):
    """``x ↦ −log p(x | c)`` per example: the module DDP wraps (its forward is what DDP hooks)."""

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return -log_prob(self.flow, x, context)


@dataclass
class RunResult:
    """How a run ended: ``status``, the step reached, a message for people, the summary."""

    status: Status
    step: int
    message: str
    summary: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Train ``flow`` on ``data`` into the directory ``out``.

    A conditional flow (``flow.context_features`` set, e.g. with a :class:`OneHot` embedding)
    gets the data's class labels as its context in training, validation and test; a data set
    without labels is then a :class:`ConfigError`.

    ``spec`` (model name, data set, data shape, levels, model options) goes into checkpoints so
    that ``evaluate`` and ``sample`` can rebuild the model. ``dist`` is the DDP context
    (:func:`~survae_flowify.training.distributed.setup`); by default one process on the device of
    the flow's parameters. Call :meth:`restore` with a loaded checkpoint to resume, then :meth:`run`.
    """

    def __init__(
        self,
        flow: Flow,
        data: DataSplits,
        out: str | Path,
        config: TrainConfig,
        *,
        spec: dict[str, Any] | None = None,
        dist: DistContext | None = None,
    ) -> None:
        if dist is None:
            param = next(flow.parameters(), None)
            dist = DistContext(device=param.device if param is not None else torch.device("cpu"))
        check_data_fits(data, config, world_size=dist.world_size)
        self.flow, self.data, self.out = flow.to(dist.device), data, Path(out)
        self.config, self.dist = config, dist
        self.train_x = data.train.to(dist.device)  # once: batches are then gathered on the device
        self.train_c = self.context("train")
        self.train_c = None if self.train_c is None else self.train_c.to(dist.device)
        self.spec = dict(spec or {"model": "custom", "dataset": data.name})
        self._probe()
        self.model: nn.Module = _NegativeLogLikelihood(self.flow)
        if dist.enabled:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=self._has_unused_parameters()
            )
        if config.compile:
            # After DDP, as torch recommends: its optimizer splits the graph at gradient buckets.
            self.model = torch.compile(self.model)
        self.optimizer = adam(flow.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.local_batch = config.batch_size // dist.world_size
        self.sampler = DistributedSampler(
            range(len(data.train)), num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
            seed=config.seed, drop_last=True,
        )
        self.steps_per_epoch = max(1, len(self.sampler) // self.local_batch)
        caps = [c for c in (config.epoch_cap and config.epoch_cap * self.steps_per_epoch,
                            config.max_steps) if c]
        self.step_cap: int | None = min(caps) if caps else None
        self.total_steps = self.step_cap or _UNBOUNDED
        self.calibrated = config.time_budget_s is None  # else: length set from measured speed
        self.step = 0
        self.train_time = 0.0
        self.checkpoints = Checkpointer(self.out / "checkpoint.pt", config, main=dist.is_main)
        self.log = RunLog(self.out, data, main=dist.is_main, quiet=config.quiet,
                          title=f"{self.spec['model']} on {data.name}")
        self._budget: TimeBudget | None = None
        self._started: float | None = None  # clock time this run() began (None outside run)
        torch.manual_seed(config.seed + _RANK_SEED_STRIDE * dist.rank)

    @property
    def checkpoint_path(self) -> Path:
        return self.checkpoints.path

    def context(self, split: str) -> Tensor | None:
        """The split's labels for a conditional flow, ``None`` for an unconditional one."""
        try:
            return split_context(self.flow, self.data, split)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _batch_context(self, rows: Tensor) -> Tensor | None:
        return None if self.train_c is None else self.train_c[rows]

    def _probe(self) -> None:
        """Check the data once, with the layers' input checks on, before the unchecked steps."""
        x, levels = self.train_x, self.data.levels
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ConfigError(f"the training split of {self.data.name!r} holds NaN or infinite values")
        if levels is not None and len(x) and not (0 <= int(x.min()) and int(x.max()) <= levels - 1):
            raise ConfigError(f"the training split of {self.data.name!r} holds values outside "
                              f"0 … {levels - 1} ({levels} levels): got {x.min()} … {x.max()}")
        was_training = self.flow.training
        self.flow.eval()
        try:
            with torch.no_grad(), _state.validation(True):
                log_prob(self.flow, x[:2], None if self.train_c is None else self.train_c[:2])
        finally:
            self.flow.train(was_training)

    def _has_unused_parameters(self) -> bool:
        """Probe: does a backward pass leave some parameter without a gradient? (e.g. the noise
        scale of a Pad that has nothing to pad). DDP must then be told to look for them."""
        # The probe must leave no trace: a train-mode forward may change state (ActNorm's
        # data-dependent initialisation would otherwise be made from these two examples).
        state = {k: v.clone() for k, v in self.flow.state_dict().items()}
        x = self.train_x[:2]
        context = None if self.train_c is None else self.train_c[:2]
        (-log_prob(self.flow, x, context).mean()).backward()
        unused = any(p.grad is None for p in self.flow.parameters() if p.requires_grad)
        self.flow.zero_grad(set_to_none=True)
        self.flow.load_state_dict(state)
        return unused

    # ----------------------------------------------------------------- resume
    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a loaded checkpoint: parameters, optimizer moments, step, RNG state.

        The schedule-defining configuration (:data:`SCHEDULE_KEYS`) must match the checkpoint's.
        """
        check_same_schedule(checkpoint["config"], self.config)
        self.calibrated = bool(checkpoint.get("calibrated", True))
        if self.config.time_budget_s is not None:
            self.total_steps = int(checkpoint["total_steps"])
        elif checkpoint["total_steps"] != self.total_steps:
            raise CheckpointError(
                f"the checkpoint's schedule has {checkpoint['total_steps']} steps, this run "
                f"{self.total_steps} (was the training set changed?)"
            )
        load_model_state(self.flow, checkpoint["model"], source=checkpoint.get("path", "checkpoint"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.step = self.checkpoints.last_saved_step = int(checkpoint["step"])
        self.train_time = float(checkpoint.get("train_time_s", 0.0))
        rng = checkpoint.get("rng", {})
        if self.dist.is_main and "torch" in rng:
            torch.set_rng_state(rng["torch"])
            if self.dist.device.type == "cuda" and rng.get("cuda"):
                torch.cuda.set_rng_state(rng["cuda"], self.dist.device)
        else:
            torch.manual_seed(self.config.seed + _RANK_SEED_STRIDE * self.dist.rank + self.step)
        self.log.trim(self.step)

    # ------------------------------------------------------------- checkpoint
    def state(self) -> dict[str, Any]:
        """Everything a resumed run needs (the checkpoint's payload)."""
        epoch, batch = divmod(self.step, self.steps_per_epoch)
        rng = {"torch": torch.get_rng_state()}
        if self.dist.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.dist.device)
        return {
            "spec": self.spec, "model": self.flow.state_dict(),
            "optimizer": self.optimizer.state_dict(), "step": self.step, "epoch": epoch,
            "batch_in_epoch": batch, "total_steps": self.total_steps, "calibrated": self.calibrated,
            "config": self.config.to_dict(), "rng": rng, "train_time_s": self._train_time_now(),
        }

    def save(self) -> None:
        """Write the checkpoint (rank 0 only), atomically."""
        self.checkpoints.save(self.state(), step=self.step, now=time.monotonic())

    # ------------------------------------------------------------------ steps
    def lr_at(self, step: int) -> float:
        """Learning rate used for optimizer step ``step`` (0-based)."""
        return cosine_lr(step, self.total_steps, self.config.lr)

    def epoch_batches(self, epoch: int) -> list[Tensor]:
        """This rank's index batches of ``epoch`` (the same on every call: seeded by epoch)."""
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(self.sampler), dtype=torch.long)
        if len(order) < self.local_batch:
            return [order]
        used = self.steps_per_epoch * self.local_batch
        return list(order[:used].view(self.steps_per_epoch, self.local_batch))

    def _train_step(self, index: Tensor, stop: bool) -> tuple[float, float, bool, bool]:
        """One optimizer step; returns (loss, grad norm, finite everywhere, stop requested anywhere)."""
        index = index.to(self.train_x.device)
        x, context = self.train_x[index], self._batch_context(index)
        set_lr(self.optimizer, self.lr_at(self.step))
        self.optimizer.zero_grad(set_to_none=True)
        with _state.validation(False):
            loss = self.model(x, context).mean()
        loss.backward()
        limit = self.config.clip_grad or math.inf
        norm = float(torch.nn.utils.clip_grad_norm_(self.flow.parameters(), limit))
        value = float(loss.detach())
        finite = math.isfinite(value) and math.isfinite(norm)
        loss_sum, bad, stops = self.dist.sum([value if finite else 0.0, float(not finite), float(stop)])
        if bad == 0:
            self.optimizer.step()
            return loss_sum / self.dist.world_size, norm, True, stops > 0
        return value, norm, False, stops > 0

    def _parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.flow.parameters())

    # -------------------------------------------------------------------- run
    def run(self, *, stop_after: int | None = None) -> RunResult:
        """Train until the schedule ends, a stop signal arrives, or the loss stops being finite.

        ``stop_after=N`` pauses (checkpoint saved, status ``"paused"``) after ``N`` steps of this
        call, e.g. to fit a job's time slot; resuming continues the same schedule.
        """
        started = self._started = time.perf_counter()
        if self.config.time_budget_s is not None:
            self._budget = TimeBudget(self.config.time_budget_s, spent_s=self.train_time,
                                      cap=self.step_cap)
            self._budget.start(self.step, started)
        self.log.open_progress(total=self._shown_total(), initial=self.step)
        try:
            with StopSignals() as signals:
                result = self._loop(signals, stop_after)
        finally:
            self.train_time = self._train_time_now()
            self._started = None
            self.log.close_progress()
        if result is not None:
            return result
        wall = time.perf_counter() - started
        self.save()
        summary = final_summary(self, wall)
        message = f"test {summary[f'test_{self.data.metric}']:.4f} {self.log.unit} after {self.step} steps"
        return RunResult("finished", self.step, message, summary)

    def _train_time_now(self) -> float:
        extra = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.train_time + extra

    def _shown_total(self) -> int | None:
        return None if self.total_steps >= _UNBOUNDED else self.total_steps

    def _loop(self, signals: StopSignals, stop_after: int | None) -> RunResult | None:
        window: list[float] = []
        pause_at = self.step + stop_after if stop_after else None
        self.checkpoints.start(time.monotonic())
        while self.step < self.total_steps:
            epoch, first = divmod(self.step, self.steps_per_epoch)
            for index in self.epoch_batches(epoch)[first:]:
                try:
                    loss, norm, finite, stop = self._train_step(index, signals.requested)
                except (ValueError, RuntimeError):
                    if self._parameters_finite():
                        raise
                    loss, norm, finite, stop = math.nan, math.nan, False, False
                if not finite:
                    return self._diverged(loss, norm)
                self.step += 1
                window.append(loss)
                self.log.advance()
                if self._budget is not None and self._budget.record(self.step, time.perf_counter()):
                    self._reestimate()
                if self.step % self.config.log_every == 0 or self.step == self.total_steps:
                    self.log.train(step=self.step, epoch=epoch + 1, losses=window, grad_norm=norm,
                                   lr=self.optimizer.param_groups[0]["lr"])
                    window = []
                if stop:
                    return self._interrupted()
                if self.step == pause_at or self.step >= self.total_steps:
                    break
                if self.checkpoints.due(self.step, time.monotonic()):
                    self.save()
            if self.step % self.steps_per_epoch == 0 or self.step >= self.total_steps:
                self._end_epoch(epoch)
            if self.step == pause_at and self.step < self.total_steps:
                return self._paused()
        return None

    def _reestimate(self) -> None:  # only called with a budget
        """Time budget: the schedule's length from the recent speed (the same on every rank: the
        largest estimate wins)."""
        total = self._budget.estimate(self.step, time.perf_counter())
        self.total_steps = max(self.step, int(self.dist.max([float(total)])[0]))
        self.calibrated = True
        self.log.set_total(self.total_steps)

    def _end_epoch(self, epoch: int) -> None:
        every = self.config.valid_every
        if every and ((epoch + 1) % every == 0 or self.step >= self.total_steps):
            nll = evaluate(self.flow, self.data.valid, context=self.context("valid"),
                           batch_size=self._eval_batch(), dist=self.dist)
            planned = math.ceil((self._shown_total() or self.step) / self.steps_per_epoch)
            every_line = max(1, planned // 20)  # at most ~20 lines per run
            announce = (epoch + 1) % every_line == 0 or self.step >= self.total_steps
            self.log.valid(step=self.step, epoch=epoch + 1, nll=nll, announce=announce)
        self.save()

    def _eval_batch(self) -> int:
        return self.config.eval_batch_size or self.config.batch_size

    # ---------------------------------------------------------------- endings
    def _diverged(self, loss: float, norm: float) -> RunResult:
        message = (
            f"training stopped: the loss or its gradient became non-finite at step {self.step + 1} "
            f"(epoch {self.step // self.steps_per_epoch + 1}; loss {loss}, gradient norm {norm} "
            f"on rank {self.dist.rank}); the step was not applied and {self.checkpoints.kept()}. "
            "Try a lower --lr or gradient clipping (--clip-grad)."
        )
        self.log.record(split="error", step=self.step, message=message)
        return RunResult("diverged", self.step, message)

    def _interrupted(self) -> RunResult:
        self.save()
        of = self._shown_total() or "an open number"
        message = (f"interrupted at step {self.step} of {of}; checkpoint saved to "
                   f"{self.checkpoint_path}; continue with --resume {self.out}")
        return RunResult("interrupted", self.step, message)

    def _paused(self) -> RunResult:
        self.save()
        of = self._shown_total() or "an open number"
        message = (f"paused after step {self.step} of {of}; "
                   f"checkpoint saved to {self.checkpoint_path}; continue with --resume {self.out}")
        return RunResult("paused", self.step, message)
