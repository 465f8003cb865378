r"""``MixtureOfGaussians``: a learned mixture of diagonal Gaussians as a base distribution."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify import _checks
from survae_flowify.algebra.transform import check_input

__all__ = ["MixtureOfGaussians"]

_LOG_2PI = math.log(2 * math.pi)


class MixtureOfGaussians(nn.Module):
    r"""``p(z) = Σ_k π_k N(z; μ_k, diag σ_k²)`` over vectors ``z ∈ ℝ^D``, ``K`` components.

    Learned logits ``a ∈ ℝ^K`` (``π = softmax(a)``), means ``μ ∈ ℝ^{K×D}`` and log-scales
    ``log σ ∈ ℝ^{K×D}``:

    .. math:: \log p(z) = \operatorname{logsumexp}_k \Big[\log \pi_k + \sum_i \big(
              -\tfrac12 ((z_i - μ_{k,i}) / σ_{k,i})^2 - \log σ_{k,i} - \tfrac12 \log 2π\big)\Big].

    At start the weights are equal, the scales 1 and the means drawn from ``N(0, I)`` (torch's
    global generator), so the components start apart. ``sample(n)`` draws a component from
    ``π`` and then a Gaussian; ``sample(n, mean=True)`` returns the mixture's mean
    ``Σ_k π_k μ_k`` for every row (like the normal bases, the deterministic "mean" sample).
    ``log_prob`` takes ``(B, D)`` and returns ``(B,)``.
    """

    def __init__(self, features: int, num_components: int) -> None:
        super().__init__()
        d = _checks.positive_int("MixtureOfGaussians", "features", features)
        k = _checks.positive_int("MixtureOfGaussians", "num_components", num_components)
        self.shape = (d,)
        self.logits = nn.Parameter(torch.zeros(k))
        self.means = nn.Parameter(torch.randn(k, d))
        self.log_scales = nn.Parameter(torch.zeros(k, d))

    def extra_repr(self) -> str:
        return f"features={self.shape[0]}, num_components={self.logits.numel()}"

    @property
    def numel(self) -> int:
        return self.shape[0]

    def log_prob(self, z: Tensor) -> Tensor:
        check_input(self, z, self.shape, what="z")
        u = (z.unsqueeze(1) - self.means) * torch.exp(-self.log_scales)  # (B, K, D)
        per_component = (-0.5 * u.square() - self.log_scales).sum(2) - 0.5 * self.numel * _LOG_2PI
        return torch.logsumexp(torch.log_softmax(self.logits, 0) + per_component, 1)

    def sample(self, n: int, *, mean: bool = False) -> Tensor:
        """``n`` samples ``(n, D)``; ``mean=True`` returns the mixture's mean ``Σ_k π_k μ_k``."""
        _checks.positive_int("MixtureOfGaussians.sample", "n", n)
        _checks.boolean("MixtureOfGaussians.sample", "mean", mean)
        weights = torch.softmax(self.logits, 0)
        if mean:
            return (weights @ self.means).expand(n, self.numel).clone()
        k = torch.multinomial(weights.detach(), n, replacement=True)
        eps = torch.randn(n, self.numel, dtype=self.means.dtype, device=self.means.device)
        return self.means[k] + torch.exp(self.log_scales[k]) * eps
