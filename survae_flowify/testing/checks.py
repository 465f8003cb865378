"""Check functions for any transform: raise ``AssertionError`` with a clear message on failure.

They compare against references that do not come from the transform's own likelihood code:
the ``torch.autograd`` Jacobian, and the transform's inverse.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from survae_flowify import _checks
from survae_flowify._state import noise_off
from survae_flowify.algebra.transform import Transform

__all__ = [
    "autograd_log_volume",
    "check_bound",
    "check_inverse",
    "check_log_det",
    "check_right_inverse",
    "perturb_parameters",
]


def _close(name: str, got: Tensor, want: Tensor, atol: float, rtol: float) -> None:
    if got.shape != want.shape:
        raise AssertionError(f"{name}: shape {tuple(got.shape)} != expected {tuple(want.shape)}")
    if not torch.allclose(got, want, atol=atol, rtol=rtol):
        err = (got - want).abs().max().item()
        raise AssertionError(f"{name}: max abs error {err:.3g} exceeds atol={atol}, rtol={rtol}")


def check_inverse(transform: Transform, x: Tensor, *, context: Tensor | None = None,
                  atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """``inverse(forward(x)) == x``: for bijections and generative surjections (left inverse).

    ``context`` (``(B, ...)``, for a conditional transform) is given to both directions."""
    z, _ = transform(x, context)
    _close(f"{type(transform).__name__} inverse(forward(x))", transform.inverse(z, context), x, atol, rtol)


def check_right_inverse(
    transform: Transform, z: Tensor, *, context: Tensor | None = None, atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """``forward(inverse(z)) == z`` for every sample drawn: the right-inverse condition that
    makes an inference surjection's likelihood exact. Checks both a sample and the mean
    (at the given ``context``, for a conditional transform)."""
    for mean in (False, True):
        x = transform.inverse(z, context, mean=mean)
        z_back, _ = transform(x, context)
        _close(f"{type(transform).__name__} forward(inverse(z, mean={mean}))", z_back, z, atol, rtol)


def autograd_log_volume(transform: Transform, x: Tensor, *, context: Tensor | None = None) -> Tensor:
    """Per-sample ``½ log det(JᵀJ)`` of the forward map's autograd Jacobian ``J`` (``(B,)``).

    For a square Jacobian this is ``log|det J|``; for an injective map (a dimension-increasing
    layer under :func:`noise_off`) it is the log-volume change of the embedding. Uses
    ``slogdet(JᵀJ)`` in float64. For a conditional transform, sample ``i`` is differentiated at
    its own, fixed context row ``context[i]``.
    """
    out = []
    for i, xi in enumerate(x):
        ci = None if context is None else context[i : i + 1]

        def f(v: Tensor, xi: Tensor = xi, ci: Tensor | None = ci) -> Tensor:
            return transform(v.view(1, *xi.shape), ci)[0].flatten()

        jac = torch.autograd.functional.jacobian(f, xi.flatten()).double()
        out.append(0.5 * torch.linalg.slogdet(jac.T @ jac)[1])
    return torch.stack(out).to(x.dtype)


def check_log_det(transform: Transform, x: Tensor, *, context: Tensor | None = None,
                  atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Contribution equals the autograd log-volume: bijections as they are; generative
    surjections with their noise switched off (``½ log det JᵀJ`` of the embedding); at a
    fixed ``context`` for a conditional transform."""
    with noise_off():
        _, contribution = transform(x, context)
        want = autograd_log_volume(transform, x, context=context)
    _close(f"{type(transform).__name__} contribution vs autograd log|det|", contribution.detach(),
           want, atol, rtol)


def check_bound(estimate: Tensor, exact: Tensor, *, slack: float = 1e-6) -> None:
    """``estimate <= exact + slack`` elementwise: a lower bound must stay below the truth."""
    excess = (estimate - exact).max().item()
    if excess > slack:
        raise AssertionError(f"bound exceeds the exact log-likelihood by {excess:.3g} nats")


@torch.no_grad()
def perturb_parameters(module: nn.Module, *, scale: float = 0.3, seed: int = 0) -> nn.Module:
    """Move every parameter away from its initial value: ``p += scale · N(0, 1) / √fan_in``.

    ``fan_in`` is 1 for vectors and scalars, and ``p[0].numel()`` for weight matrices and
    kernels, so wide networks stay in a sane range. At initialisation many log-determinants
    are exactly 0 and a test there proves little.
    """
    scale = _checks.finite_float("perturb_parameters", "scale", scale, minimum=0.0)
    gen = torch.Generator().manual_seed(_checks.integer("perturb_parameters", "seed", seed, minimum=0))
    for p in module.parameters():
        fan_in = p[0].numel() if p.dim() >= 2 else 1
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p)
        p.add_(noise * (scale / fan_in**0.5))
    return module
