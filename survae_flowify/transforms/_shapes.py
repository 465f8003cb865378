"""Small helpers shared by the generic layers."""

from __future__ import annotations


def event_shape(layer: str, shape: object) -> tuple[int, ...]:
    """Normalise ``int`` or sequence to a tuple of positive ints, or raise naming ``layer``."""
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(shape)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{layer}: expected an event shape, got {shape!r}") from None
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"{layer}: expected an event shape of positive ints, got {shape}")
    return shape
