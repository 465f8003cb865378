"""Closed-form references that do not use any layer's likelihood code.

For a stack of linear pieces over a standard-normal base, with Gaussian inverse densities,
the *generative* direction ``x = transform.inverse(z)`` is an affine function of the base
sample ``z`` and of every standard-normal draw ``ε_k`` the inverses make. We find that map by
autograd (replacing ``torch.randn`` by tracked zero tensors during the inverse), so the model
density is ``N(m, J_z J_zᵀ + Σ_k J_k J_kᵀ)`` and ``torch.distributions.MultivariateNormal``
gives ``log p(x)`` exactly. Only ``inverse`` is used: contributions never enter the oracle.
"""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
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


# --------------------------------------------------------------------------------------------
# Uniform noise: the importance-weighted limit is an integral over the noise support.
#
# With noise ``u ~ q`` of bounded support ``S`` the IW bound tends, as K grows, to
# ``log ∫_S p(x, u) du`` (the joint of the data and the noise coordinates under the model), not
# to ``log p(x)``; the expected single-sample ELBO is ``E_q[log p(x, u) − log q(u)]``. Both are
# computed here by Gauss–Legendre quadrature over ``S`` (an interval, a box of up to two
# dimensions, or a disk), from a joint density that the test writes down from the layer's
# documented forward map; no contribution of the code under test enters.


def _legendre(low: float, high: float, n: int) -> tuple[Tensor, Tensor]:
    """Gauss–Legendre nodes and weights on ``[low, high]`` (float64)."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    half = 0.5 * (high - low)
    return (torch.from_numpy(nodes) * half + 0.5 * (high + low),
            torch.from_numpy(weights) * half)


def box_quadrature(low: Tensor, high: Tensor, n: int = 96) -> tuple[Tensor, Tensor]:
    """Tensor-product Gauss–Legendre rule on the box ``Π_j [low_j, high_j]`` (``e ≤ 2`` dims):
    nodes ``(P, e)`` and weights ``(P,)``, exact for polynomials of degree ``< 2n`` per axis."""
    axes = [_legendre(float(lo), float(hi), n) for lo, hi in zip(low, high, strict=True)]
    nodes = torch.stack(torch.meshgrid(*[a[0] for a in axes], indexing="ij"), -1).reshape(-1, len(axes))
    weights = torch.stack(torch.meshgrid(*[a[1] for a in axes], indexing="ij"), -1).prod(-1).flatten()
    return nodes, weights


def disk_quadrature(radius: float, n: int = 96) -> tuple[Tensor, Tensor]:
    """Rule on the disk of ``radius``: Gauss–Legendre in ``r`` (weight ``r``), the periodic
    trapezoid (spectrally accurate) in the angle. Nodes ``(P, 2)``, weights ``(P,)``."""
    r, wr = _legendre(0.0, radius, n)
    theta = torch.arange(2 * n, dtype=torch.float64) * (math.pi / n)
    rr, tt = torch.meshgrid(r, theta, indexing="ij")
    nodes = torch.stack([rr * tt.cos(), rr * tt.sin()], -1).reshape(-1, 2)
    weights = (wr[:, None] * r[:, None] * (math.pi / n)).expand(n, 2 * n).flatten()
    return nodes, weights


def support_limits(log_joint: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """From ``log p(x_b, u_i)`` at the nodes (``(B, P)``) and the rule's weights: the IW limit
    ``log ∫_S p(x, u) du`` and the expected ELBO under ``q = U(S)``,
    ``(1/|S|) ∫_S log p(x, u) du + log |S|``; both ``(B,)``."""
    volume = weights.sum()
    limit = torch.logsumexp(log_joint + weights.log(), dim=1)
    elbo = (log_joint * weights).sum(1) / volume + volume.log()
    return limit, elbo


def uniform_draw_map(transform: ffn.Transform, in_shape: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """The forward map of a layer whose only randomness is ``torch.rand`` (uniform noise),
    as an affine function of the input and of the draws: ``z = c + A x + R r``, ``r ∈ [0, 1)^e``.

    Found by autograd with ``torch.rand`` replaced by given values (one sample, float64); only
    the output ``z`` is used, never the contribution. Returns ``(c, A, R)``.
    """
    real_rand = torch.rand
    counts: list[int] = []

    def counting_rand(*size, **kwargs):
        out = real_rand(*size, **kwargs)
        counts.append(out.numel())
        return out

    d = math.prod(in_shape)
    with torch.no_grad(), mock.patch("torch.rand", counting_rand):
        transform(torch.zeros(1, *in_shape, dtype=torch.float64))
    e = sum(counts)

    def f(x: Tensor, r: Tensor) -> Tensor:
        taken = [0]

        def given_rand(*size, **kwargs):
            shape = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
            n = math.prod(shape)
            out = r[taken[0]: taken[0] + n].reshape(tuple(shape))
            taken[0] += n
            return out

        with mock.patch("torch.rand", given_rand):
            return transform(x.view(1, *in_shape))[0].flatten()

    x0, r0 = torch.zeros(d, dtype=torch.float64), torch.zeros(e, dtype=torch.float64)
    a, r = torch.autograd.functional.jacobian(f, (x0, r0))
    with torch.no_grad():
        c = f(x0, r0)
    return c, a, r


def orthonormal_complement_of_diagonal(n: int) -> Tensor:
    """``(n, n − 1)``: an orthonormal basis of the vectors whose entries sum to zero."""
    q, _ = torch.linalg.qr(torch.cat([torch.ones(n, 1), torch.eye(n)[:, : n - 1]], 1).double())
    return q[:, 1:]
