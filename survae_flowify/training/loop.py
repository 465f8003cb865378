"""The training loop: minimise the mean negative ELBO ``−E[log p(x)]`` of any :class:`Flow`.

One :class:`Trainer` runs one training job: Adam with the cosine schedule of
:func:`~survae_flowify.training.schedule.cosine_lr`, epochs drawn by ``DistributedSampler`` (a
single process is world size 1), validation after each epoch, checkpoints written atomically,
and at the end the test metric (bits/dim for images, nats for other data), the figures and
``summary.json``. Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves and stops; a
non-finite loss or gradient stops without touching the last good checkpoint.

``metrics.jsonl`` holds one JSON object per line: ``split="train"`` every ``log_every`` steps
(``step``, ``epoch``, ``loss`` = mean negative log-likelihood bound in nats over the steps since
the last record, the same as ``bpd`` or ``nats``, ``lr`` of the last step, ``grad_norm``),
``split="valid"`` after each epoch, ``split="test"`` at the end, ``split="error"`` on divergence.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data.distributed import DistributedSampler

from survae_flowify.algebra import Flow
from survae_flowify.data.base import DataSplits
from survae_flowify.training.checkpoint import CheckpointError, load_model_state, save_checkpoint
from survae_flowify.training.config import SCHEDULE_KEYS, TrainConfig
from survae_flowify.training.distributed import DistContext
from survae_flowify.training.records import MetricsLog, read_jsonl, rewrite_jsonl, write_json
from survae_flowify.training.schedule import cosine_lr, set_lr

__all__ = ["RunResult", "Trainer", "evaluate", "nll_to_metric", "parameter_count"]

Status = Literal["finished", "paused", "interrupted", "diverged"]
_RANK_SEED_STRIDE = 7919  # a prime: distinct noise streams per rank
_CALIBRATION_STEPS = 20  # steps timed before a time budget fixes the schedule's length


def parameter_count(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def nll_to_metric(nll: float, data: DataSplits) -> float:
    """Negative log-likelihood per example (nats) to the data set's metric: bits per dimension
    ``nll / (D ln 2)`` for images, nats otherwise."""
    return nll / (data.dim * math.log(2)) if data.metric == "bpd" else nll


@torch.no_grad()
def evaluate(
    flow: Flow,
    x: Tensor,
    *,
    batch_size: int = 256,
    num_samples: int | None = None,
    dist: DistContext | None = None,
) -> float:
    """Mean negative log-likelihood bound ``−(1/N) Σ log p(xᵢ)`` in nats, over all of ``x``.

    The ELBO, or with ``num_samples=K`` the importance-weighted bound. Under DDP each rank takes
    the rows ``rank, rank + W, …`` and the sums are all-reduced, so every example counts once.
    """
    dist = dist or DistContext()
    was_training = flow.training
    flow.eval()
    device = next(flow.parameters()).device
    rows = x[dist.rank::dist.world_size]
    total = 0.0
    step = batch_size if num_samples is None else max(1, batch_size // min(num_samples, 16))
    for start in range(0, len(rows), step):
        batch = rows[start:start + step].to(device)
        logp = flow.log_prob(batch, num_samples=num_samples, chunk_size=min(num_samples or 1, 16))
        total += float(logp.double().sum())
    flow.train(was_training)
    total, count = dist.sum([total, float(len(rows))])
    return -total / count


class _NegativeLogLikelihood(nn.Module):
    """``x ↦ −log p(x)`` per example: the module DDP wraps (its forward is what DDP hooks)."""

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor) -> Tensor:
        return -self.flow.log_prob(x)


@dataclass
class RunResult:
    """How a run ended: ``status``, the step reached, a message for people, the summary."""

    status: Status
    step: int
    message: str
    summary: dict[str, Any] = field(default_factory=dict)


class _StopSignals:
    """SIGINT/SIGTERM set a flag the loop checks between steps; a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """Train ``flow`` on ``data`` into the directory ``out``.

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
        if config.batch_size < dist.world_size:
            raise ValueError(
                f"batch size {config.batch_size} is smaller than the number of processes "
                f"{dist.world_size}; the batch is split over processes"
            )
        self.flow, self.data, self.out = flow.to(dist.device), data, Path(out)
        self.config, self.dist = config, dist
        self.train_x = data.train.to(dist.device)  # once: batches are then gathered on the device
        self.spec = dict(spec or {"model": "custom", "dataset": data.name})
        self.model: nn.Module = _NegativeLogLikelihood(self.flow)
        if dist.enabled:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=self._has_unused_parameters()
            )
        self.optimizer = torch.optim.Adam(
            flow.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.local_batch = config.batch_size // dist.world_size
        self.sampler = DistributedSampler(
            range(len(data.train)), num_replicas=dist.world_size, rank=dist.rank, shuffle=True,
            seed=config.seed, drop_last=True,
        )
        self.steps_per_epoch = max(1, len(self.sampler) // self.local_batch)
        total = config.epochs * self.steps_per_epoch
        self.max_total_steps = min(total, config.max_steps) if config.max_steps else total
        self.total_steps = self.max_total_steps
        self.calibrated = config.time_budget_s is None  # else: set the length from measured speed
        self.step = 0
        self.train_time = 0.0
        self.checkpoint_path = self.out / "checkpoint.pt"
        self.last_saved_step: int | None = None
        self.metrics = MetricsLog(self.out / "metrics.jsonl") if dist.is_main else None
        torch.manual_seed(config.seed + _RANK_SEED_STRIDE * dist.rank)

    def _has_unused_parameters(self) -> bool:
        """Probe: does a backward pass leave some parameter without a gradient? (e.g. the noise
        scale of a Pad that has nothing to pad). DDP must then be told to look for them."""
        x = self.train_x[:2]
        (-self.flow.log_prob(x).mean()).backward()
        unused = any(p.grad is None for p in self.flow.parameters() if p.requires_grad)
        self.flow.zero_grad(set_to_none=True)
        return unused

    # ----------------------------------------------------------------- resume
    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from a loaded checkpoint: parameters, optimizer moments, step, RNG state.

        The schedule-defining configuration (:data:`SCHEDULE_KEYS`) must match the checkpoint's.
        """
        saved = checkpoint["config"]
        clash = [k for k in SCHEDULE_KEYS if k in saved and saved[k] != getattr(self.config, k)]
        if clash:
            detail = ", ".join(
                f"{k}: checkpoint {saved[k]!r}, now {getattr(self.config, k)!r}" for k in clash
            )
            raise CheckpointError(f"cannot resume with a different schedule ({detail})")
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
        self.step = self.last_saved_step = int(checkpoint["step"])
        self.train_time = float(checkpoint.get("train_time_s", 0.0))
        rng = checkpoint.get("rng", {})
        if self.dist.is_main and "torch" in rng:
            torch.set_rng_state(rng["torch"])
            if self.dist.device.type == "cuda" and rng.get("cuda"):
                torch.cuda.set_rng_state(rng["cuda"], self.dist.device)
        else:
            torch.manual_seed(self.config.seed + _RANK_SEED_STRIDE * self.dist.rank + self.step)
        self._trim_metrics()

    def _trim_metrics(self) -> None:
        """Drop records written after the checkpoint (a crash after them), so steps stay unique."""
        if self.metrics is None or not self.metrics.path.exists():
            return
        kept = [r for r in read_jsonl(self.metrics.path) if int(r.get("step", 0)) <= self.step]
        rewrite_jsonl(self.metrics.path, kept)

    # ------------------------------------------------------------- checkpoint
    def save(self) -> None:
        """Write the checkpoint (rank 0 only), atomically."""
        if not self.dist.is_main:
            return
        epoch, batch = divmod(self.step, self.steps_per_epoch)
        rng = {"torch": torch.get_rng_state()}
        if self.dist.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.dist.device)
        save_checkpoint(self.checkpoint_path, {
            "spec": self.spec, "model": self.flow.state_dict(),
            "optimizer": self.optimizer.state_dict(), "step": self.step, "epoch": epoch,
            "batch_in_epoch": batch, "total_steps": self.total_steps, "calibrated": self.calibrated,
            "config": self.config.to_dict(), "rng": rng, "train_time_s": self.train_time,
        })
        self.last_saved_step = self.step

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
        x = self.train_x[index.to(self.train_x.device)]
        set_lr(self.optimizer, self.lr_at(self.step))
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model(x).mean()
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

    # -------------------------------------------------------------------- run
    def run(self, *, stop_after: int | None = None) -> RunResult:
        """Train until the schedule ends, a stop signal arrives, or the loss stops being finite.

        ``stop_after=N`` pauses (checkpoint saved, status ``"paused"``) after ``N`` steps of this
        call, e.g. to fit a job's time slot; resuming continues the same schedule.
        """
        start = time.perf_counter()
        progress = self._progress()
        try:
            with _StopSignals() as signals:
                result = self._loop(signals, progress, stop_after)
        finally:
            self.train_time += time.perf_counter() - start
            progress.close()
        if result is not None:
            return result
        return self._finish(time.perf_counter() - start)

    def _loop(self, signals: _StopSignals, progress: Any, stop_after: int | None) -> RunResult | None:
        window: list[float] = []
        pause_at = self.step + stop_after if stop_after else None
        last_save = time.monotonic()
        start, first_step = time.perf_counter(), self.step
        while self.step < self.total_steps:
            epoch, first = divmod(self.step, self.steps_per_epoch)
            for index in self.epoch_batches(epoch)[first:]:
                loss, norm, finite, stop = self._train_step(index, signals.requested)
                if not finite:
                    return self._diverged(loss, norm)
                self.step += 1
                window.append(loss)
                progress.update(1)
                if not self.calibrated and self.step - first_step >= _CALIBRATION_STEPS:
                    self._calibrate(time.perf_counter() - start, self.step - first_step, progress)
                if self.step % self.config.log_every == 0 or self.step == self.total_steps:
                    self._log_train(window, norm, epoch, progress)
                    window = []
                if stop:
                    return self._interrupted()
                if self.step == pause_at or self.step >= self.total_steps:
                    break
                if self._checkpoint_due(last_save):
                    self.save()
                    last_save = time.monotonic()
            if self.step % self.steps_per_epoch == 0 or self.step >= self.total_steps:
                self._end_epoch(epoch, progress)
                last_save = time.monotonic()
            if self.step == pause_at and self.step < self.total_steps:
                return self._paused()
        return None

    def _calibrate(self, elapsed: float, steps: int, progress: Any) -> None:
        """Time budget: fix the schedule's length from the speed of the steps so far (the same
        on every rank: rank speeds are combined by their maximum step count)."""
        remaining = self.config.time_budget_s - self.train_time - elapsed
        more = max(1, int(remaining * steps / elapsed)) if elapsed > 0 else self.max_total_steps
        total = min(self.step + more, self.max_total_steps)
        self.total_steps = int(self.dist.max([float(total)])[0])
        self.calibrated = True
        progress.total = self.total_steps
        progress.refresh()

    def _checkpoint_due(self, last_save: float) -> bool:
        every = self.config.checkpoint_every
        by_steps = every > 0 and self.step % every == 0
        return by_steps or time.monotonic() - last_save > 60 * self.config.checkpoint_minutes

    def _end_epoch(self, epoch: int, progress: Any) -> None:
        every = self.config.valid_every
        if every and ((epoch + 1) % every == 0 or self.step >= self.total_steps):
            nll = evaluate(self.flow, self.data.valid, batch_size=self._eval_batch(), dist=self.dist)
            value = nll_to_metric(nll, self.data)
            self._record(split="valid", step=self.step, epoch=epoch + 1, loss=nll,
                         **{self.data.metric: value})
            every_line = max(1, self.config.epochs // 20)  # at most ~20 lines per run
            if (epoch + 1) % every_line == 0 or self.step >= self.total_steps:
                self._say(f"epoch {epoch + 1}: validation {value:.4f} {self._unit()}", progress)
        self.save()

    def _eval_batch(self) -> int:
        return self.config.eval_batch_size or self.config.batch_size

    def _unit(self) -> str:
        return "bits/dim" if self.data.metric == "bpd" else "nats"

    # ---------------------------------------------------------------- outputs
    def _progress(self) -> Any:
        from tqdm.auto import tqdm

        show = self.dist.is_main and not self.config.quiet and sys.stderr.isatty()
        return tqdm(total=self.total_steps, initial=self.step, disable=not show, unit="step",
                    dynamic_ncols=True, file=sys.stderr, desc=f"{self.spec['model']} on {self.data.name}")

    def _say(self, text: str, progress: Any) -> None:
        """A line for people: through tqdm when its bar is shown, on stderr otherwise."""
        if not self.dist.is_main or self.config.quiet:
            return
        if getattr(progress, "disable", True):
            print(text, file=sys.stderr, flush=True)
        else:
            progress.write(text, file=sys.stderr)

    def _record(self, **record: Any) -> None:
        if self.metrics is not None:
            self.metrics.write(**record)

    def _log_train(self, window: list[float], norm: float, epoch: int, progress: Any) -> None:
        loss = sum(window) / len(window)
        value = nll_to_metric(loss, self.data)
        lr = self.optimizer.param_groups[0]["lr"]
        self._record(split="train", step=self.step, epoch=epoch + 1, loss=loss,
                     **{self.data.metric: value}, lr=lr, grad_norm=norm)
        progress.set_postfix({self.data.metric: f"{value:.4f}", "lr": f"{lr:.2e}"}, refresh=False)

    def _diverged(self, loss: float, norm: float) -> RunResult:
        kept = "no checkpoint had been written yet"
        if self.last_saved_step is not None:
            kept = (f"the last good checkpoint, {self.checkpoint_path} (step {self.last_saved_step}), "
                    "is left untouched")
        message = (
            f"training stopped: the loss or its gradient became non-finite at step {self.step + 1} "
            f"(epoch {self.step // self.steps_per_epoch + 1}; loss {loss}, gradient norm {norm} "
            f"on rank {self.dist.rank}); the step was not applied and {kept}. "
            "Try a lower --lr or gradient clipping (--clip-grad)."
        )
        self._record(split="error", step=self.step, message=message)
        return RunResult("diverged", self.step, message)

    def _interrupted(self) -> RunResult:
        self.save()
        message = (f"interrupted at step {self.step} of {self.total_steps}; checkpoint saved to "
                   f"{self.checkpoint_path}; continue with --resume {self.out}")
        return RunResult("interrupted", self.step, message)

    def _paused(self) -> RunResult:
        self.save()
        message = (f"paused after step {self.step} of {self.total_steps}; checkpoint saved to "
                   f"{self.checkpoint_path}; continue with --resume {self.out}")
        return RunResult("paused", self.step, message)

    def _finish(self, wall: float) -> RunResult:
        """Final checkpoint, test (and validation) metrics, figures and ``summary.json``."""
        self.save()
        eval_kw = {"batch_size": self._eval_batch(), "dist": self.dist}
        metric, data = self.data.metric, self.data
        summary: dict[str, Any] = {
            "model": self.spec.get("model"), "dataset": data.name, "metric": metric,
            f"test_{metric}": nll_to_metric(evaluate(self.flow, data.test, **eval_kw), data),
            f"valid_{metric}": nll_to_metric(evaluate(self.flow, data.valid, **eval_kw), data),
            "bound": "exact" if self.flow.exact else "ELBO: an upper bound on the true metric",
        }
        if self.config.eval_samples:
            k = self.config.eval_samples
            iw = evaluate(self.flow, data.test, num_samples=k, **eval_kw)
            summary.update({f"test_iw_{metric}": nll_to_metric(iw, data), "eval_samples": k})
        summary.update({
            "parameters": parameter_count(self.flow), "steps": self.step,
            "epochs": round(self.step / self.steps_per_epoch, 3), "time_budget_s": self.config.time_budget_s,
            "train_time_s": round(self.train_time, 3), "wall_time_s": round(wall, 3),
            "device": str(self.dist.device), "world_size": self.dist.world_size,
            "checkpoint": str(self.checkpoint_path), "data_shape": list(data.shape),
        })
        if self.dist.enabled:
            summary["ranks_in_sync"] = self._ranks_in_sync()
        if self.dist.is_main:
            tests = {k: v for k, v in summary.items() if k.startswith("test_")}
            self._record(split="test", step=self.step, **tests)
            summary["figures"] = self._figures()
            write_json(self.out / "summary.json", summary)
        self.dist.barrier()
        unit = self._unit()
        message = f"test {summary[f'test_{metric}']:.4f} {unit} after {self.step} steps"
        return RunResult("finished", self.step, message, summary)

    def _ranks_in_sync(self) -> bool:
        """Whether every DDP rank holds the same parameters (checksums compared across ranks)."""
        flat = torch.cat([p.detach().reshape(-1).double() for p in self.flow.parameters()])
        sums = [float(flat.sum()), float(flat.square().sum())]
        highest = self.dist.max(sums)
        lowest = [-v for v in self.dist.max([-v for v in sums])]
        return highest == lowest

    def _figures(self) -> dict[str, str]:
        """Write the run's PNGs; a plotting failure is reported, never fatal (the run is saved)."""
        if not self.config.plots:
            return {}
        from survae_flowify.training import plots

        flow, data, out, figures = self.flow, self.data, self.out, {}
        flow.eval()
        try:
            figures["loss"] = str(plots.save_loss_curve(read_jsonl(self.metrics.path), out / "loss.png",
                                                        metric=data.metric))
            n = self.config.plot_samples
            if data.kind == "image":
                figures["samples"] = str(plots.save_sample_grids(flow, out / "samples.png", n=n,
                                                                 levels=data.levels))
                x = data.test[:min(n, 32)].to(self.dist.device)
                figures["reconstructions"] = str(plots.save_reconstructions(
                    flow, x, out / "reconstructions.png", levels=data.levels))
            elif data.shape == (2,):
                from survae_flowify.data import TOY_BOUND

                figures["density"] = str(plots.save_density_map(
                    flow, data.test, out / "density.png", bound=TOY_BOUND,
                    num_samples=self.config.eval_samples))
            else:
                with torch.no_grad():
                    samples = flow.sample(min(len(data.test), 2000))
                figures["samples"] = str(plots.save_scatter(
                    out / "samples.png", [("data", data.test[:2000]), ("model samples", samples)]))
        except Exception as err:  # figures are a convenience: report and keep the run's results
            print(f"warning: could not draw the figures ({type(err).__name__}: {err})", file=sys.stderr)
        finally:
            flow.train()
        return figures
