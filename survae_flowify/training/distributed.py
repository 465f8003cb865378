"""Multi-process training through PyTorch's DDP, started by ``torchrun``.

``torchrun --nproc-per-node N -m survae_flowify.cli train …`` (or the ``survae-flowify`` script)
sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous address; :func:`setup` then
joins the process group (NCCL on GPUs, gloo on CPUs). Every rank sees a disjoint shard of each
epoch (``DistributedSampler``), gradients are averaged by ``DistributedDataParallel``, evaluation
sums are all-reduced, and only rank 0 writes files. Multi-node works the same way through
torchrun's ``--nnodes``/``--rdzv-endpoint``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist

from survae_flowify.training.config import ConfigError

__all__ = ["DeviceChoice", "DistContext", "resolve_device", "setup", "teardown"]

DeviceChoice = Literal["auto", "cpu", "cuda"]


def resolve_device(choice: DeviceChoice, *, local_rank: int = 0) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU. ``cuda`` without a GPU is an error."""
    if choice not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be one of auto, cpu, cuda; got {choice!r}")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but PyTorch sees no CUDA GPU here")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        """True under torchrun with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints progress."""
        return self.rank == 0

    def _reduce(self, values: list[float], op: dist.ReduceOp) -> list[float]:
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=op)
        return t.tolist()

    def sum(self, values: list[float]) -> list[float]:
        """Sum ``values`` over all ranks (identity in a single process)."""
        return self._reduce(values, dist.ReduceOp.SUM)

    def max(self, values: list[float]) -> list[float]:
        """Elementwise maximum of ``values`` over all ranks (identity in a single process)."""
        return self._reduce(values, dist.ReduceOp.MAX)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        return self.sum([float(flag)])[0] > 0

    def broadcast(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (identity in a single process)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup(device: DeviceChoice = "auto") -> DistContext:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1), else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    target = resolve_device(device, local_rank=local_rank)
    if world > 1 and not dist.is_initialized():
        if target.type == "cuda":
            torch.cuda.set_device(target)
        dist.init_process_group(backend="nccl" if target.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=target)


def teardown(ctx: DistContext) -> None:
    """Leave the process group (if one was joined)."""
    if ctx.enabled and dist.is_initialized():
        dist.barrier()  # leave together: a rank that tears down early can abort its peers' threads
        dist.destroy_process_group()
