"""Speed of one model on synthetic data of a data set's shape: training step, evaluation, sampling."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from survae_flowify.algebra import Flow
from survae_flowify.training.evaluation import parameter_count
from survae_flowify.training.optim import adam

__all__ = ["benchmark", "synthetic_batch"]


def synthetic_batch(
    shape: tuple[int, ...], levels: int | None, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Random integer images in ``{0, …, levels−1}`` (``uint8``), or standard normal vectors."""
    if levels:
        return torch.randint(0, levels, (batch_size, *shape), dtype=torch.uint8, device=device)
    return torch.randn(batch_size, *shape, device=device)


def _timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median wall time of ``fn`` in milliseconds (after one warm-up call)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def benchmark(flow: Flow, x: torch.Tensor, *, steps: int = 10) -> dict[str, Any]:
    """Median milliseconds per training step (forward, backward, Adam), per no-grad ELBO
    evaluation and per batch of samples, with ``x``'s batch size; and examples per second."""
    device = x.device
    flow = flow.to(device)
    optimizer = adam(flow.parameters(), lr=1e-6)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        (-flow.log_prob(x).mean()).backward()
        optimizer.step()

    flow.train()
    step_ms = _timed(train_step, steps, device)
    flow.eval()
    with torch.no_grad():
        eval_ms = _timed(lambda: flow.log_prob(x), steps, device)
        sample_ms = _timed(lambda: flow.sample(len(x)), steps, device)
    flow.train()
    return {
        "parameters": parameter_count(flow), "batch_size": len(x), "device": str(device),
        "train_step_ms": round(step_ms, 3), "eval_ms": round(eval_ms, 3),
        "sample_ms": round(sample_ms, 3),
        "train_examples_per_s": round(1000 * len(x) / step_ms, 1),
    }
