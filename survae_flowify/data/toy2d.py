"""Procedural 2-D densities for quick experiments and density heat maps.

Each sampler draws ``n`` points from a fixed distribution on roughly ``[−4.5, 4.5]²``; the splits
use fixed seeds (independent of the run's seed), so every run sees the same data.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from survae_flowify.data.base import DataSplits

__all__ = ["TOY_BOUND", "TOY_NAMES", "TOY_SIZES", "load_toy", "sample_toy"]

TOY_BOUND = 4.5
"""Half-width of the square ``[−b, b]²`` used for density heat maps."""

TOY_SIZES = {"train": 20000, "valid": 2000, "test": 10000}
_SEEDS = {"train": 1, "valid": 2, "test": 3}


def _moons(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two interleaved half circles with Gaussian noise (sd 0.1), scaled to ≈[−3, 3]."""
    upper = rng.random(n) < 0.5
    t = rng.random(n) * math.pi
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    pts = np.stack([x, y], 1) + 0.1 * rng.standard_normal((n, 2))
    return 2.0 * (pts - [0.5, 0.25])


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform on the dark squares of a 4×4 board on [−4, 4]²."""
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2.0
    x2 = x2 + np.floor(x1) % 2
    return 2.0 * np.stack([x1, x2], 1)


def _circles(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two concentric rings of radius 1.5 and 3 with Gaussian noise (sd 0.08)."""
    radius = np.where(rng.random(n) < 0.5, 1.5, 3.0)
    angle = rng.random(n) * 2 * math.pi
    pts = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return pts + 0.08 * rng.standard_normal((n, 2))


def _eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    """Eight Gaussians (sd 0.2) evenly spaced on the circle of radius 2.8."""
    k = rng.integers(0, 8, n)
    centres = 2.8 * np.stack([np.cos(k * math.pi / 4), np.sin(k * math.pi / 4)], 1)
    return centres + 0.2 * rng.standard_normal((n, 2))


def _pinwheel(rng: np.random.Generator, n: int) -> np.ndarray:
    """Five spiralling arms (the pinwheel of Johnson et al., 2016)."""
    arms, radial_sd, tangential_sd, rate = 5, 0.3, 0.1, 0.25
    k = rng.integers(0, arms, n)
    feats = rng.standard_normal((n, 2)) * [radial_sd, tangential_sd] + [1.0, 0.0]
    angle = 2 * math.pi * k / arms + rate * np.exp(feats[:, 0])
    c, s = np.cos(angle), np.sin(angle)
    rot = np.stack([np.stack([c, -s], 1), np.stack([s, c], 1)], 1)
    return 2.0 * np.einsum("nij,nj->ni", rot, feats)


def _two_spirals(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two interleaved spirals with Gaussian noise (sd 0.1)."""
    t = np.sqrt(rng.random(n)) * 3 * math.pi
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    pts = sign[:, None] * np.stack([t * np.cos(t), t * np.sin(t)], 1) / 3
    return pts + 0.1 * rng.standard_normal((n, 2))


_SAMPLERS: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "moons": _moons,
    "checkerboard": _checkerboard,
    "circles": _circles,
    "eight-gaussians": _eight_gaussians,
    "pinwheel": _pinwheel,
    "two-spirals": _two_spirals,
}
TOY_NAMES: tuple[str, ...] = tuple(_SAMPLERS)


def sample_toy(name: str, n: int, *, seed: int = 0) -> torch.Tensor:
    """``n`` points of the 2-D density ``name`` as a float32 tensor ``(n, 2)``."""
    if name not in _SAMPLERS:
        raise ValueError(f"unknown 2-D density {name!r}; choose one of: {', '.join(TOY_NAMES)}")
    rng = np.random.default_rng(seed)
    return torch.from_numpy(_SAMPLERS[name](rng, n).astype(np.float32))


def load_toy(name: str) -> DataSplits:
    """Train/validation/test samples of the 2-D density ``name`` (sizes :data:`TOY_SIZES`)."""
    splits = {s: sample_toy(name, TOY_SIZES[s], seed=_SEEDS[s]) for s in TOY_SIZES}
    return DataSplits(name, "toy", splits["train"], splits["valid"], splits["test"])
