"""Evaluation of a flow on a split: the mean negative log-likelihood bound and its metric."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify.algebra import Flow
from survae_flowify.data.base import DataSplits
from survae_flowify.training.distributed import DistContext

__all__ = ["evaluate", "nll_to_metric", "parameter_count", "split_context"]


def parameter_count(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def nll_to_metric(nll: float, data: DataSplits) -> float:
    """Negative log-likelihood per example (nats) to the data set's metric: bits per dimension
    ``nll / (D ln 2)`` for images, nats otherwise."""
    return nll / (data.dim * math.log(2)) if data.metric == "bpd" else nll


def log_prob(flow: Flow, x: Tensor, context: Tensor | None, **kwargs: object) -> Tensor:
    """``flow.log_prob(x, context, **kwargs)``, called without the context when there is none
    (so a user's flow whose ``log_prob`` predates contexts keeps working)."""
    return flow.log_prob(x, **kwargs) if context is None else flow.log_prob(x, context, **kwargs)


def split_context(flow: Flow, data: DataSplits, split: str) -> Tensor | None:
    """The context of ``split`` for ``flow``: the split's class labels when the flow is
    conditional (it takes them through its embedding), ``None`` for an unconditional flow.

    A conditional flow on a data set without labels raises a ``ValueError`` that says so.
    """
    if flow.context_features is None:
        return None
    if data.labels is None:
        raise ValueError(f"the flow is class-conditional but data set {data.name!r} has no labels "
                         "(train it without --conditional, or use a labelled data set)")
    return getattr(data.labels, split)


@torch.no_grad()
def evaluate(
    flow: Flow,
    x: Tensor,
    *,
    context: Tensor | None = None,
    batch_size: int = 256,
    num_samples: int | None = None,
    dist: DistContext | None = None,
) -> float:
    """Mean negative log-likelihood bound ``−(1/N) Σ log p(xᵢ | cᵢ)`` in nats, over all of ``x``.

    The ELBO, or with ``num_samples=K`` the importance-weighted bound. ``context`` (one row per
    example, e.g. class labels) goes to the flow with its rows of ``x``. Under DDP each rank takes
    the rows ``rank, rank + W, …`` and the sums are all-reduced, so every example counts once.
    ``x`` must hold at least one example.
    """
    if len(x) == 0:
        raise ValueError("evaluate: x must hold at least one example, got an empty tensor")
    if context is not None and len(context) != len(x):
        raise ValueError(f"evaluate: context must have one row per example of x ({len(x)}), got "
                         f"{len(context)}")
    dist = dist or DistContext()
    was_training = flow.training
    flow.eval()
    device = next(flow.parameters()).device
    rows = x[dist.rank::dist.world_size]
    contexts = None if context is None else context[dist.rank::dist.world_size]
    total = 0.0
    step = batch_size if num_samples is None else max(1, batch_size // min(num_samples, 16))
    for start in range(0, len(rows), step):
        batch = rows[start:start + step].to(device)
        c = None if contexts is None else contexts[start:start + step].to(device)
        logp = log_prob(flow, batch, c, num_samples=num_samples, chunk_size=min(num_samples or 1, 16))
        total += float(logp.double().sum())
    flow.train(was_training)
    total, count = dist.sum([total, float(len(rows))])
    return -total / count
