"""The transform algebra of SurVAE Flows (Nielsen et al., 2020), as used by flowification.

Every layer maps data ``x`` (shape ``(B, *in_shape)``) to latents ``z`` (shape
``(B, *out_shape)``) and returns a per-sample likelihood contribution ``V(x, z)`` of shape
``(B,)`` such that ``log p(x) >= log p(z) + V(x, z)``, with equality for exact layers.

===========================  ===================  =====================  ==========================
class                        forward ``x → z``    inverse ``z → x``      contribution
===========================  ===================  =====================  ==========================
:class:`Bijection`           deterministic        deterministic          ``log|det J|`` (exact)
:class:`InferenceSurjection` deterministic        samples ``p(d | z)``   ``log|det| + log p(d|z)``
:class:`GenerativeSurjection` samples ``q(u|x)``  deterministic          ``log|det| − log q(u|x)``
===========================  ===================  =====================  ==========================

Subclasses implement ``_forward(x) -> (z, contribution)`` and ``_inverse(z, mean) -> x``; the
public :meth:`Transform.forward` and :meth:`Transform.inverse` validate the input once, here.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from survae_flowify import _checks, _state

__all__ = [
    "Bijection",
    "GenerativeSurjection",
    "InferenceSurjection",
    "Shape",
    "Transform",
    "check_context",
    "check_input",
]

Shape = tuple[int | None, ...]
"""An event shape; ``None`` marks a size that may vary (e.g. image height)."""


def _fmt(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "(batch, ...)"
    return "(" + ", ".join(["batch"] + ["*" if s is None else str(s) for s in shape]) + ")"


def check_input(
    layer: nn.Module,
    t: Tensor,
    expected: Shape | None,
    *,
    what: str,
    integer_ok: bool = False,
    reference: nn.Module | None = None,
) -> None:
    """Raise ``ValueError`` naming ``layer`` unless ``t`` is a valid input.

    Always (while validation is on): ``t`` is a tensor of shape ``(B, *expected)``
    (``expected=None`` accepts any shape with a batch dimension), floating-point, or a real
    integer type when ``integer_ok``. At the entry of a call only (a composite's parts skip
    it, see :func:`survae_flowify._state.inside_call`): a floating ``t`` has the dtype of the
    parameters of ``reference`` (default ``layer``), ``t`` lies on their device, and it holds
    no NaN or infinity (not checked on ``meta`` tensors, which hold no values). Integer input
    follows no parameter dtype: the layer that takes it (``Dequantize``) converts it.
    """
    if not _state.validation_enabled():
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{_describe(layer)}: {what} must be a torch.Tensor, got {type(t).__name__}")
    floating = t.is_floating_point()
    if not floating and not (integer_ok and _is_real_integer(t.dtype)):
        kinds = "a floating-point or integer" if integer_ok else "a floating-point"
        raise ValueError(f"{_describe(layer)}: {what} must be {kinds} tensor, got dtype {t.dtype}")
    got = tuple(t.shape)
    if expected is None:
        ok = t.dim() >= 1
    else:
        ok = t.dim() == len(expected) + 1 and all(
            e is None or e == g for e, g in zip(expected, got[1:], strict=True)
        )
    if not ok:
        raise ValueError(f"{_describe(layer)}: expected {what} of shape {_fmt(expected)}, got {got}")
    if not _state.entry_checks_enabled():
        return
    _check_dtype_device(layer, t, what, layer if reference is None else reference)
    if floating and t.device.type != "meta" and not _all_finite(t):
        raise ValueError(f"{_describe(layer)}: {what} contains NaN or infinite values (shape {got})")


def check_context(layer: nn.Module, context: Tensor | None, features: int | None, batch: int) -> None:
    """For a layer with ``context_features=features``: ``context`` must be ``(batch, features)``.

    ``features=None`` (an unconditional layer) accepts anything, the context being ignored. A
    missing or misshapen context raises a ``ValueError`` naming the layer and the expected shape.
    """
    if features is None or not _state.validation_enabled():
        return
    if context is None:
        raise ValueError(f"{_describe(layer)}: needs a context of shape ({batch}, {features}), got none")
    if not isinstance(context, Tensor) or tuple(context.shape) != (batch, features):
        got = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
        raise ValueError(f"{_describe(layer)}: expected a context of shape ({batch}, {features}), got {got}")


def _all_finite(t: Tensor) -> bool:
    """No NaN or infinity in ``t``. A NaN or an infinity makes the sum non-finite, so a finite
    sum settles it in one vectorised reduction (``isfinite(t).all()`` writes a boolean tensor
    and reads it back, ~10× the time on a CPU); a sum that overflows with finite entries falls
    back to the exact test."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _is_real_integer(dtype: torch.dtype) -> bool:
    return not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)


def _first_state(module: nn.Module) -> Tensor | None:
    """The module's first floating parameter or buffer: what its dtype and device are."""
    for p in module.parameters():
        if p.is_floating_point():
            return p
    for b in module.buffers():
        if b.is_floating_point():
            return b
    return None


def _check_dtype_device(layer: nn.Module, t: Tensor, what: str, reference: nn.Module) -> None:
    state = _first_state(reference)
    if state is None:
        return  # a layer without parameters follows its input
    if t.device != state.device:
        raise ValueError(
            f"{_describe(layer)}: {what} is on device {t.device} but the parameters are on "
            f"{state.device}; move one of them (.to(device))"
        )
    if t.is_floating_point() and t.dtype != state.dtype:
        raise ValueError(
            f"{_describe(layer)}: {what} has dtype {t.dtype} but the parameters have dtype "
            f"{state.dtype}; convert one of them (x.to({state.dtype}) or model.to({t.dtype}))"
        )


def _describe(layer: nn.Module) -> str:
    extra = layer.extra_repr()
    return f"{type(layer).__name__}({extra})" if extra else type(layer).__name__


class Transform(nn.Module):
    """Base class: a map with a forward/inverse pair and a likelihood contribution.

    Class attributes declare the kind: ``exact`` (the contribution is exact, not a bound),
    ``stochastic_forward`` and ``stochastic_inverse``. ``bounded_noise`` is true when the
    forward noise has bounded support (uniform), in which case importance-weighted bounds
    converge to the likelihood restricted to that support.
    """

    exact: ClassVar[bool] = True
    _forward_takes_context: ClassVar[bool] = False
    _inverse_takes_context: ClassVar[bool] = False
    stochastic_forward: ClassVar[bool] = False
    stochastic_inverse: ClassVar[bool] = False
    accepts_integer: ClassVar[bool] = False

    @property
    def bounded_noise(self) -> bool:
        return False

    @property
    def in_shape(self) -> Shape | None:
        """Event shape the forward expects (``None``: any)."""
        return None

    @property
    def out_shape(self) -> Shape | None:
        """Event shape the inverse expects (``None``: any)."""
        return None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # A layer opts into a context by naming it in its own _forward/_inverse; layers written
        # against the context-free signatures (``_forward(x)``, ``_inverse(z, *, mean)``) keep
        # working and never see one. Decided once per class, so the hot path reads a flag.
        cls._forward_takes_context = "context" in inspect.signature(cls._forward).parameters
        cls._inverse_takes_context = "context" in inspect.signature(cls._inverse).parameters

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map ``x`` of shape ``(B, *in_shape)`` to ``(z, contribution)``; contribution is ``(B,)``.

        ``context`` (``(B, *context_shape)``, optional) reaches the layers that take one; the others
        ignore it.
        """
        check_input(self, x, self.in_shape, what="x", integer_ok=self.accepts_integer)
        with _state.inside_call():
            if self._forward_takes_context:
                return self._forward(x, context=context)
            return self._forward(x)

    def inverse(self, z: Tensor, context: Tensor | None = None, *, mean: bool = False) -> Tensor:
        """Map ``z`` back to data space (``context`` as in :meth:`forward`).

        ``mean=True`` replaces every sample drawn by a stochastic inverse with the mean of its
        density (the paper's "mean" samples and reconstructions, appendix E).
        """
        check_input(self, z, self.out_shape, what="z")
        if _state.validation_enabled() and not isinstance(mean, bool):
            _checks.boolean(type(self).__name__ + ".inverse", "mean", mean)
        with _state.inside_call():
            if self._inverse_takes_context:
                return self._inverse(z, context=context, mean=mean)
            return self._inverse(z, mean=mean)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse(self, z: Tensor, *, mean: bool) -> Tensor:
        raise NotImplementedError

    def trace(self, x: Tensor, context: Tensor | None = None) -> list[tuple[str, Transform, Tensor, Tensor]]:
        """Forward pass recording ``(name, layer, output, contribution)`` for every leaf layer."""
        z, contribution = self.forward(x, context)
        return [("", self, z, contribution)]


class Bijection(Transform):
    """A diffeomorphism: contribution ``log|det ∂z/∂x|``, exact."""


class InferenceSurjection(Transform):
    """Dimension-reducing surjection: deterministic forward, stochastic right inverse.

    Exact when ``forward(inverse(z)) == z`` for every sample (the right-inverse condition).
    """

    stochastic_inverse = True


class GenerativeSurjection(Transform):
    """Dimension-increasing surjection: stochastic forward, deterministic left inverse.

    The contribution is a single-sample lower bound; the gap is ``KL(q(u|x) ‖ p(u|x))``.
    """

    exact = False

    @property
    def stochastic_forward(self) -> bool:  # type: ignore[override]
        """A layer whose contribution is exact adds no noise (e.g. Unfold with stride == kernel)."""
        return not self.exact

