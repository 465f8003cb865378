"""Training, evaluation, checkpoints, DDP and figures (DESIGN.md §5).

``Trainer(flow, data, out, TrainConfig(...)).run()`` trains any :class:`~survae_flowify.Flow`
on :class:`~survae_flowify.data.DataSplits` with the paper's defaults (Adam 5e-4, cosine
annealing to 0, batch 256) and writes ``metrics.jsonl``, ``checkpoint.pt``, ``summary.json``
and PNG figures into ``out``. The command line (``survae-flowify``) is a thin layer over this.

One module per job: ``loop`` (the step loop and schedule), ``budget`` (a time budget's schedule
length), ``checkpointing`` (when to save) and ``checkpoint`` (the file format), ``runlog``
(metrics, progress, messages), ``report`` (the final metrics, figures, ``summary.json``),
``evaluation``, ``optim`` (Adam, fused where torch offers it), ``config``, ``distributed``,
``records`` (atomic files), ``plots``.
"""

from survae_flowify.training.budget import TimeBudget
from survae_flowify.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from survae_flowify.training.config import SCHEDULE_KEYS, ConfigError, TrainConfig
from survae_flowify.training.distributed import DistContext, resolve_device, setup, teardown
from survae_flowify.training.evaluation import evaluate, nll_to_metric, parameter_count, split_context
from survae_flowify.training.loop import RunResult, Trainer, check_data_fits
from survae_flowify.training.optim import adam
from survae_flowify.training.records import MetricsLog, atomic_write, read_jsonl, write_json
from survae_flowify.training.schedule import cosine_lr, set_lr

__all__ = [
    "SCHEDULE_KEYS",
    "CheckpointError",
    "ConfigError",
    "DistContext",
    "MetricsLog",
    "RunResult",
    "TimeBudget",
    "TrainConfig",
    "Trainer",
    "adam",
    "atomic_write",
    "check_data_fits",
    "cosine_lr",
    "evaluate",
    "load_checkpoint",
    "load_model_state",
    "nll_to_metric",
    "parameter_count",
    "read_jsonl",
    "resolve_device",
    "save_checkpoint",
    "set_lr",
    "setup",
    "split_context",
    "teardown",
    "write_json",
]
