r"""``ActNorm``: a per-channel affine bijection with data-dependent initialisation (Glow, §3.1)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from survae_flowify import _checks
from survae_flowify.algebra.transform import Bijection, Shape

__all__ = ["ActNorm"]

# Added to the initial standard deviation: a channel that is constant on the first batch
# (a batch of one vector, a blank image border) gets scale ``EPS`` rather than ``log 0``.
_EPS = 1e-6


class ActNorm(Bijection):
    r"""Per-channel affine normalisation (Kingma & Dhariwal 2018, Glow §3.1).

    For an input of event shape ``shape = (C, *rest)`` (vectors ``(D,)``: one channel per
    feature; images ``(C, H, W)``: one per channel, shared over the ``H·W`` positions), with
    learned ``b, log s ∈ ℝ^C``:

    .. math:: z_{c,p} = (x_{c,p} - b_c)\, e^{-\log s_c}, \qquad
              x_{c,p} = z_{c,p}\, e^{\log s_c} + b_c, \qquad
              V = -P \sum_c \log s_c ,

    ``P = prod(rest)`` the number of positions per channel (1 for vectors, ``H·W`` for images).

    **Data-dependent initialisation.** The first forward call in training mode on a non-empty
    batch sets ``b`` to the batch's per-channel mean and ``s`` to its per-channel standard
    deviation (over the batch and the positions), so that this batch leaves the layer with
    zero mean and unit variance per channel; then the buffer ``initialized`` is set. It is in
    the state dict: a model loaded with ``load_state_dict`` (or ``torch.load``) is not
    initialised again. Nothing initialises in eval mode or in :meth:`inverse` (sampling): an
    uninitialised ActNorm is the identity (``b = 0``, ``log s = 0``), so sampling or evaluating a
    model before its first training batch uses the identity here. Under ``torch.distributed``
    (DDP) every rank sees a different first batch: the statistics are those of all the ranks'
    batches together (two ``all_reduce`` calls, once), so every rank starts from the same
    parameters (every rank must then run its first training forward together, as DDP does).
    """

    def __init__(self, shape: int | tuple[int, ...]) -> None:
        super().__init__()
        self.shape = _checks.shape("ActNorm", "shape", shape)
        channels = self.shape[0]
        self.bias = torch.nn.Parameter(torch.zeros(channels))
        self.log_scale = torch.nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))
        # A Python mirror of the buffer, so the hot path reads no tensor (no device sync);
        # kept in step by _load_from_state_dict.
        self._pending_init = True

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    @property
    def in_shape(self) -> Shape:
        return self.shape

    @property
    def out_shape(self) -> Shape:
        return self.shape

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._pending_init = not bool(self.initialized)

    def _per_channel(self, p: Tensor) -> Tensor:
        """``(C,)`` → ``(C, 1, …, 1)``, broadcasting over the positions of one channel."""
        return p.view(-1, *([1] * (len(self.shape) - 1)))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        values = x.transpose(0, 1).reshape(self.shape[0], -1)
        # Sums, not means, so that ranks with different batch sizes average correctly; the
        # variance from centred squares (not E[x²] − mean², which cancels in float32).
        count = values.new_tensor(float(values.shape[1]))
        sums = torch.cat([values.sum(1), count.view(1)])
        _sum_over_ranks(sums)
        mean = sums[:-1] / sums[-1]
        squares = (values - mean.unsqueeze(1)).square().sum(1)
        _sum_over_ranks(squares)
        std = (squares / sums[-1]).sqrt()
        self.bias.copy_(mean)
        self.log_scale.copy_(torch.log(std + _EPS))
        self.initialized.fill_(True)
        self._pending_init = False

    def _contribution(self, x: Tensor) -> Tensor:
        positions = math.prod(self.shape[1:])
        return (-positions * self.log_scale.sum()).expand(x.shape[0])

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self._pending_init and self.training and x.shape[0] > 0:
            self._initialize(x)
        z = (x - self._per_channel(self.bias)) * self._per_channel(torch.exp(-self.log_scale))
        return z, self._contribution(x)

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        return z * self._per_channel(torch.exp(self.log_scale)) + self._per_channel(self.bias)


def _sum_over_ranks(t: Tensor) -> None:
    """In place: the sum of ``t`` over all ranks when ``torch.distributed`` is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
