r"""A uniformly random permutation of dimension 1 (SurVAE Flows, Nielsen et al. 2020, table 1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from survae_flowify import _state
from survae_flowify.algebra.transform import Transform, _describe

__all__ = ["StochasticPermutation", "check_vectors", "permute_randomly"]


def check_vectors(layer: nn.Module, t: Tensor, what: str) -> None:
    """``t`` is ``(B, D)``: these layers act on vectors of any length ``D``, so their
    ``in_shape`` is open and the number of dimensions is checked here."""
    if _state.validation_enabled() and t.dim() != 2:
        raise ValueError(f"{_describe(layer)}: expected {what} of shape (batch, D), got {tuple(t.shape)}")


def permute_randomly(t: Tensor) -> Tensor:
    """``t`` (``(B, D)``) with each row's entries in an independent, uniformly random order.

    The order is ``argsort`` of ``B × D`` uniforms drawn from the global generator (so
    ``torch.manual_seed`` fixes it), in float64: float32's 2²⁴ values would tie (and bias the
    order) in a few percent of rows already at ``D = 1000``."""
    order = torch.rand(t.shape, dtype=torch.float64, device=t.device).argsort(dim=1)
    return t.gather(1, order)


class StochasticPermutation(Transform):
    r"""``z = π x`` along dimension 1 of ``(B, D)``, ``π`` drawn uniformly from the ``D!``
    permutations for every sample and every call; contribution ``V = 0``.

    The model it defines is the symmetrised density
    $p(x) = \frac{1}{D!} \sum_{π} p_Z(π x)$, and ``log p_Z(π x)`` for one random ``π`` is an
    unbiased estimate of ``E_π log p_Z(π x) ≤ log p(x)`` (Jensen): a stochastic lower bound,
    equal to ``log p(x)`` exactly when the rest of the flow is permutation-invariant (then every
    ``π`` gives the same value). The layer therefore declares ``exact = False`` (a flow using it
    reports a bound, and ``Flow.log_prob(x, num_samples=K)`` averages over ``K`` permutations,
    tightening toward ``log p(x)``), with both directions stochastic. The inverse applies a
    fresh random permutation; ``mean=True`` applies none (there is no mean permutation; the
    identity is a representative of the orbit).
    """

    exact = False
    stochastic_forward = True
    stochastic_inverse = True

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_vectors(self, x, "x")
        return permute_randomly(x), x.new_zeros(x.shape[0])

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        check_vectors(self, z, "z")
        return z.clone() if mean else permute_randomly(z)
