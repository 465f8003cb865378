"""Evaluation of a flow on a split: the mean negative log-likelihood bound and its metric."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify.algebra import Flow
from survae_flowify.data.base import DataSplits
from survae_flowify.training.distributed import DistContext

__all__ = ["evaluate", "nll_to_metric", "parameter_count"]


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
    ``x`` must hold at least one example.
    """
    if len(x) == 0:
        raise ValueError("evaluate: x must hold at least one example, got an empty tensor")
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
