"""Closed-form references that do not use any layer's likelihood code.

For a stack of linear pieces over a standard-normal base, with Gaussian inverse densities,
the *generative* direction ``x = transform.inverse(z)`` is an affine function of the base
sample ``z`` and of every standard-normal draw ``ε_k`` the inverses make. We find that map by
autograd (replacing ``torch.randn`` by tracked zero tensors during the inverse), so the model
density is ``N(m, J_z J_zᵀ + Σ_k J_k J_kᵀ)`` and ``torch.distributions.MultivariateNormal``
gives ``log p(x)`` exactly. Only ``inverse`` is used: contributions never enter the oracle.
"""

from __future__ import annotations

from unittest import mock

import torch
from torch import Tensor

import survae_flowify as ffn


def _generative_affine_map(flow: ffn.Flow, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Mean ``m`` and covariance ``C`` of ``x`` under the flow's generative process."""
    base_shape = flow.base.shape
    z = torch.zeros((1, *base_shape), dtype=dtype, requires_grad=True)
    draws: list[Tensor] = []
    real_randn = torch.randn

    def tracked_randn(*size, **kwargs):
        shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        eps = torch.zeros(tuple(shape), dtype=kwargs.get("dtype") or dtype, requires_grad=True)
        draws.append(eps)
        return eps

    with mock.patch("torch.randn", tracked_randn):
        x = flow.transform.inverse(z).flatten()
    del real_randn
    inputs = [z, *draws]
    rows = []
    for i in range(x.numel()):
        grads = torch.autograd.grad(x[i], inputs, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([
            (g if g is not None else torch.zeros_like(t)).flatten() for g, t in zip(grads, inputs)
        ]))
    jac = torch.stack(rows)  # (D_x, D_z + Σ D_k)
    return x.detach(), jac @ jac.T


def linear_gaussian_log_prob(flow: ffn.Flow, x: Tensor) -> Tensor:
    """Exact ``log p(x)`` of a linear-Gaussian flow (standard-normal base), shape ``(B,)``."""
    if not isinstance(flow.base, ffn.StandardNormal):
        raise TypeError("the oracle assumes a StandardNormal base")
    mean, cov = _generative_affine_map(flow, torch.float64)
    mvn = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    return mvn.log_prob(x.double().flatten(1))
