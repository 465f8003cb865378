"""Argument checks shared by every constructor and call: one place, one message format.

Each check returns the (normalised) value or raises an error of the form
``"<owner>: <argument> must be <expected>, got <value!r>"`` — ``owner`` names the layer or
function (``"Linear"``, ``"Flow.log_prob"``), so a user sees which option of which layer was
wrong, what was expected and what came. ``bool`` is never accepted where an ``int`` is asked for
(``True`` is an ``int`` to Python, never a size to a user).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

__all__ = [
    "boolean",
    "choice",
    "finite_float",
    "integer",
    "no_extra_kwargs",
    "positive_float",
    "positive_int",
    "shape",
]

T = TypeVar("T")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(owner: str, name: str, expected: str, value: object, exc: type[Exception] = ValueError) -> None:
    raise exc(f"{owner}: {name} must be {expected}, got {value!r}")


def integer(owner: str, name: str, value: object, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
    """An ``int`` (not ``bool``) in ``[minimum, maximum]`` (either bound optional)."""
    if minimum is not None and maximum is not None:
        expected = f"an int in [{minimum}, {maximum}]"
    elif minimum is not None:
        expected = f"an int >= {minimum}"
    elif maximum is not None:
        expected = f"an int <= {maximum}"
    else:
        expected = "an int"
    if not _is_int(value):
        _fail(owner, name, expected, value, TypeError if not isinstance(value, int) else ValueError)
    assert isinstance(value, int)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        _fail(owner, name, expected, value)
    return value


def positive_int(owner: str, name: str, value: object) -> int:
    """An ``int`` (not ``bool``) ``>= 1``."""
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        _fail(owner, name, "a positive int", value)
    return value  # type: ignore[return-value]


def _real(value: object) -> float | None:
    """``value`` as a float if it is a real number (int, float, numpy or 0-d tensor scalar), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        item = value.item()  # type: ignore[attr-defined]
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            return float(item)
    return None


def finite_float(owner: str, name: str, value: object, *, minimum: float | None = None,
                 maximum: float | None = None, strict: bool = False) -> float:
    """A finite real number, optionally bounded (``strict``: bounds excluded)."""
    f = _real(value)
    lo = "" if minimum is None else (f" > {minimum}" if strict else f" >= {minimum}")
    hi = "" if maximum is None else (f" < {maximum}" if strict else f" <= {maximum}")
    expected = "a finite number" + (lo + (" and" if lo and hi else "") + hi if (lo or hi) else "")
    if f is None or not math.isfinite(f):
        _fail(owner, name, expected, value)
    assert f is not None
    if minimum is not None and (f <= minimum if strict else f < minimum):
        _fail(owner, name, expected, value)
    if maximum is not None and (f >= maximum if strict else f > maximum):
        _fail(owner, name, expected, value)
    return f


def positive_float(owner: str, name: str, value: object) -> float:
    """A finite real number ``> 0``."""
    return finite_float(owner, name, value, minimum=0.0, strict=True)


def boolean(owner: str, name: str, value: object) -> bool:
    """A ``bool`` (not a truthy int or string)."""
    if not isinstance(value, bool):
        _fail(owner, name, "True or False", value, TypeError)
    return value  # type: ignore[return-value]


def choice(owner: str, name: str, value: T, options: Iterable[T]) -> T:
    """One of ``options`` (compared with ``==``; strings case-sensitively)."""
    opts = tuple(options)
    if not any(type(value) is type(o) and value == o for o in opts):
        _fail(owner, name, "one of " + ", ".join(repr(o) for o in opts), value)
    return value


def shape(owner: str, name: str, value: object, *, allow_none: bool = False) -> tuple[int | None, ...]:
    """A non-empty event shape: an int or a sequence of positive ints (``None`` if allowed)."""
    expected = "a positive int or a non-empty tuple of positive ints" + (" or None" if allow_none else "")
    if _is_int(value):
        value = (value,)
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or len(value) == 0:
        _fail(owner, name, expected, value)
    assert isinstance(value, Sequence)
    for s in value:
        if not ((allow_none and s is None) or (_is_int(s) and s > 0)):
            _fail(owner, name, expected, value)
    return tuple(value)


def no_extra_kwargs(owner: str, kwargs: dict[str, Any]) -> None:
    """Reject keyword arguments that a constructor does not know (typos must not pass silently)."""
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise TypeError(f"{owner}: unexpected keyword argument(s) {names}")
