"""Process-wide switches, in the spirit of ``torch.no_grad``.

* ``noise_off()``: generative surjections add no noise. Their forward map becomes the
  noise-free injective embedding and their contribution is the embedding's log-volume
  ``½·log det(JᵀJ)`` alone (there is no sample, so no ``−log q(u)`` term). This is how a
  flowified network reproduces the plain network's output, and how the embedding's
  log-determinant is tested against autograd.
* ``validation(False)``: skip the input checks (shape, finiteness), e.g. inside
  ``torch.compile`` where a data-dependent ``raise`` would break the graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

__all__ = ["noise_off", "noise_enabled", "validation", "validation_enabled"]

_NOISE = [True]
_VALIDATE = [True]


def noise_enabled() -> bool:
    """Whether generative surjections currently sample their noise."""
    return _NOISE[0]


def validation_enabled() -> bool:
    """Whether transforms currently check their inputs."""
    return _VALIDATE[0]


@contextmanager
def _switch(flag: list[bool], value: bool) -> Iterator[None]:
    previous = flag[0]
    flag[0] = value
    try:
        yield
    finally:
        flag[0] = previous


def noise_off() -> AbstractContextManager[None]:
    """Context manager: generative surjections act as their noise-free embeddings."""
    return _switch(_NOISE, False)


def validation(enabled: bool = True) -> AbstractContextManager[None]:
    """Context manager that turns input validation on or off."""
    return _switch(_VALIDATE, bool(enabled))
