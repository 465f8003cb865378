"""The library's switches, per thread, like ``torch.no_grad``.

* ``noise_off()``: generative surjections add no noise. Their forward map becomes the
  noise-free injective embedding and their contribution is the embedding's log-volume
  ``½·log det(JᵀJ)`` alone (there is no sample, so no ``−log q(u)`` term). This is how a
  flowified network reproduces the plain network's output, and how the embedding's
  log-determinant is tested against autograd.
* ``validation(False)``: skip the input checks (shape, dtype, device, finiteness), e.g. inside
  ``torch.compile`` where a data-dependent ``raise`` would break the graph.
* ``inside_call()`` (internal): the layers inside a composite skip the checks that only the
  entry of a call needs (non-finite values, which cost a device sync, and dtype/device, which
  look up a parameter).

Each switch is an attribute of a :class:`threading.local`: a thread sees its own setting, and a
new thread starts from the defaults, so one thread's ``validation(False)`` or ``noise_off()``
never changes what another computes. (Not :mod:`contextvars`: dynamo cannot trace
``ContextVar.get``, and every call reads these switches, so each would break a
``torch.compile`` graph; it traces reads of a ``threading.local``.)
"""

from __future__ import annotations

import threading

from survae_flowify import _checks

__all__ = [
    "entry_checks_enabled",
    "inside_call",
    "noise_enabled",
    "noise_off",
    "validation",
    "validation_enabled",
]


class _Switches(threading.local):
    """Per-thread switches; ``__init__`` runs once in every thread that reads them."""

    def __init__(self) -> None:
        # Instance attributes (not class defaults), so that dynamo's guards see them.
        self.noise = True
        self.validate = True
        self.entry_checks = True


_SWITCHES = _Switches()


def noise_enabled() -> bool:
    """Whether generative surjections currently sample their noise."""
    return _SWITCHES.noise


def validation_enabled() -> bool:
    """Whether transforms currently check their inputs."""
    return _SWITCHES.validate


def entry_checks_enabled() -> bool:
    """Whether this call is the entry of a call (not a layer inside a composite)."""
    return _SWITCHES.entry_checks


class _Switch:
    """Set one switch for the ``with`` block; restore the previous value after."""

    __slots__ = ("_name", "_previous", "_value")

    def __init__(self, name: str, value: bool) -> None:
        self._name = name
        self._value = value
        self._previous = value

    def __enter__(self) -> None:
        self._previous = getattr(_SWITCHES, self._name)
        setattr(_SWITCHES, self._name, self._value)

    def __exit__(self, *exc: object) -> None:
        setattr(_SWITCHES, self._name, self._previous)


class _InsideCall:
    """The body of a composite: its parts skip the entry-only checks."""

    __slots__ = ("_previous",)

    def __enter__(self) -> None:
        # With validation off nothing is checked, so nothing is switched: the body of every
        # call then writes no state, which keeps torch.compile graphs whole.
        self._previous: bool | None = None
        if _SWITCHES.validate:
            self._previous = _SWITCHES.entry_checks
            _SWITCHES.entry_checks = False

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            _SWITCHES.entry_checks = self._previous


def noise_off() -> _Switch:
    """Context manager: generative surjections act as their noise-free embeddings."""
    return _Switch("noise", False)


def validation(enabled: bool = True) -> _Switch:
    """Context manager that turns input validation on or off (in this thread)."""
    return _Switch("validate", _checks.boolean("validation", "enabled", enabled))


def inside_call() -> _InsideCall:
    """Context manager for the body of a call: the layers it runs skip the entry-only checks."""
    return _InsideCall()
