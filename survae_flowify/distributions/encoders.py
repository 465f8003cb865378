r"""Conditional densities ``q(v | c)`` that a layer holds for itself: encoders and learned noise.

:class:`~survae_flowify.VariationalDequantize`, :class:`~survae_flowify.Augment` (with a learned
``noise=``) and :class:`~survae_flowify.VAE` each condition a density on the layer's own input,
not on the flow's context. Two kinds are accepted:

* :class:`~survae_flowify.ConditionalNormal` ``(shape, context_features)``:
  ``N(μ(c), diag σ(c)²)``; a draw is reparametrised, ``v = μ + σ ⊙ ε``, and ``log q`` is the
  closed form at ``ε``;
* an exact, conditional :class:`~survae_flowify.Flow` (``context_features`` set, optionally an
  ``embedding``): a draw is :meth:`Flow.sample_and_log_prob` (one inverse and one forward pass,
  differentiable in the parameters).

The context ``c`` is always the owning layer's input flattened to ``(B, D)``, so the density's
``context_features`` is ``D`` (or, for a flow with an ``embedding``, whatever that embedding
makes of a ``(B, D)`` input). Its event shape is read from it (``shape`` of the base or the
density). :func:`check_density` validates all of this once, at construction, naming the layer.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from survae_flowify.algebra.flow import Flow
from survae_flowify.distributions.normal import ConditionalNormal

__all__ = ["check_density", "density_shape", "draw", "event_shape", "log_prob", "mode", "sample"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def event_shape(q: nn.Module) -> tuple[int, ...] | None:
    """The event shape of ``q`` (``None`` when it cannot be read)."""
    if isinstance(q, ConditionalNormal):
        return q.shape
    if isinstance(q, Flow):
        shape = getattr(q.base, "shape", None) or q.transform.out_shape
        if shape is not None and all(isinstance(s, int) for s in shape):
            return tuple(shape)
    return None


def density_shape(owner: str, name: str, q: object) -> tuple[int, ...]:
    """The event shape of ``q`` after checking its type; ``TypeError``/``ValueError`` naming ``owner``."""
    if not isinstance(q, (ConditionalNormal, Flow)):
        raise TypeError(
            f"{owner}: {name} must be a survae_flowify.ConditionalNormal or a conditional "
            f"survae_flowify.Flow (a density q(· | input)), got {type(q).__name__}"
        )
    shape = event_shape(q)
    if shape is None:
        raise ValueError(f"{owner}: cannot read the event shape of {name} (a Flow whose base has "
                         "a 'shape' or whose transform has a known out_shape)")
    return shape


def check_density(owner: str, name: str, q: object, *, context_features: int) -> tuple[int, ...]:
    """``q``'s event shape, after checking that ``q`` is a density ``owner`` can condition on its
    flattened input of ``context_features`` entries; ``TypeError``/``ValueError`` naming ``owner``."""
    shape = density_shape(owner, name, q)
    if q.context_features is None:  # type: ignore[union-attr]
        raise ValueError(
            f"{owner}: {name} must be conditional (context_features set), because it sees the "
            f"layer's input flattened to (batch, {context_features}); got an unconditional "
            f"{type(q).__name__}"
        )
    if isinstance(q, Flow) and not q.exact:
        raise ValueError(f"{owner}: {name} must be an exact Flow (its log-density enters the "
                         "contribution), got one that is a lower bound")
    embedded = isinstance(q, Flow) and q.embedding is not None
    if not embedded and q.context_features != context_features:  # type: ignore[union-attr]
        raise ValueError(
            f"{owner}: {name} sees the layer's input flattened to (batch, {context_features}), so "
            f"it needs context_features={context_features} (or a Flow with an embedding), got "
            f"context_features={q.context_features}"  # type: ignore[union-attr]
        )
    return shape


def draw(q: nn.Module, context: Tensor, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """``(v, log q(v | c))`` with ``v ~ q(· | c)`` reparametrised; ``v`` of shape ``(B, *shape)``."""
    n = context.shape[0]
    if n == 0:  # Flow.sample_* take n ≥ 1; nothing to draw
        return context.new_zeros((0, *shape)), context.new_zeros(0)
    if isinstance(q, ConditionalNormal):
        loc, log_scale = q.params(context)
        eps = torch.randn_like(loc)  # the global generator: a seeded call draws the same noise
        log_q = (-0.5 * eps.square() - log_scale - _HALF_LOG_2PI).flatten(1).sum(1)
        return loc + log_scale.exp() * eps, log_q
    return q.sample_and_log_prob(n, context)


def log_prob(q: nn.Module, v: Tensor, context: Tensor) -> Tensor:
    """``log q(v | c)``, shape ``(B,)``."""
    if v.shape[0] == 0:
        return v.new_zeros(0)
    return q.log_prob(v, context)


def mode(q: nn.Module, context: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A deterministic point of ``q(· | c)``: the mean of a ConditionalNormal; for a Flow, its
    base's mean pushed through the transform's mean inverse."""
    n = context.shape[0]
    if n == 0:
        return context.new_zeros((0, *shape))
    if isinstance(q, ConditionalNormal):
        return q.params(context)[0]
    e = context if q.embedding is None else q.embedding(context)
    base_conditional = getattr(q.base, "context_features", None) is not None
    z = q.base.sample(n, e, mean=True) if base_conditional else q.base.sample(n, mean=True)
    return q.transform.inverse(z, e, mean=True)


def sample(q: nn.Module, context: Tensor, shape: tuple[int, ...], *, mean: bool) -> Tensor:
    """One draw of ``q(· | c)``, or :func:`mode` when ``mean``."""
    if mean:
        return mode(q, context, shape)
    if context.shape[0] == 0 or isinstance(q, ConditionalNormal):
        return draw(q, context, shape)[0]
    return q.sample(context.shape[0], context)  # no log-density needed: skip its forward pass

