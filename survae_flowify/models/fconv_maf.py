r"""A flowified model that learns fast per CPU second: learned squeezes, then autoregressive steps.

For images ``x ∈ ℝ^{C×H×W}`` (``H``, ``W`` divisible by ``2^squeezes``), ``c' = 4^{squeezes} C``:

$$ \underbrace{\big(\text{Conv2d}(c, 4c, 2, 2) → \text{RqSpline}\big)^{\text{squeezes}}}_{\text{flowified
   convolutions and activations}} \;→\; \big(\text{Conv2d}(c', c', 1, 1) → \text{step}\big)^{\text{steps}}. $$

Each ``Conv2d(c, 4c, 2, 2)`` is the paper's flowified convolution (§3.2) with a kernel that tiles
the image and as many outputs as a patch has entries: the unfold drops nothing and adds no noise,
and the kernel is one square matrix ``UΣVᵀ`` (rotations and singular values) shared by every
patch — a learned, invertible squeeze with log-det ``(HW/4)·Σ log σ``. The 1×1
``Conv2d(c', c', 1, 1)`` mixes the channels before every step (a flowified Glow 1×1 convolution).
A step is a native :class:`~survae_flowify.MaskedAutoregressive` affine layer (MADE, two hidden
layers of ``hidden``) over the flattened map (``step="autoregressive"``), or a native
:class:`~survae_flowify.RqCoupling` with an MLP conditioner (``step="coupling"``). Every part is a
bijection, so ``flow.exact`` holds and

$$ \log p(x) = \log \mathcal{N}(z; 0, I) + \sum_{\text{parts}} \log\left|\det J_{\text{part}}\right|. $$

In ``benchmarks/quality.py`` it beats nflows' and zuko's MAF of the same size in bits/dim after
the same CPU time (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Literal

from survae_flowify import _checks
from survae_flowify.algebra import Flow, Sequential, Transform
from survae_flowify.bijections import MaskedAutoregressive, RqCoupling
from survae_flowify.distributions import StandardNormal
from survae_flowify.layers.conv import Conv2d
from survae_flowify.transforms import Dequantize, Flatten, Reshape, RqSpline

__all__ = ["fconv_maf"]

StepKind = Literal["autoregressive", "coupling"]
_OWNER = "fconv_maf"


def fconv_maf(
    shape: tuple[int, int, int] = (1, 28, 28),
    *,
    squeezes: int = 2,
    steps: int = 5,
    step: StepKind = "autoregressive",
    hidden: int = 256,
    levels: int | None = 256,
) -> Flow:
    """Build the flow of the module docstring over images of event shape ``shape``.

    ``hidden``: the width of each step's two hidden layers. ``levels``: prepend
    ``Dequantize(levels)`` (``None``: continuous input, as the quality benchmark feeds it).
    """
    shape = _checks.shape(_OWNER, "shape", shape)
    if len(shape) != 3:
        raise ValueError(f"{_OWNER}: shape must be an image shape (C, H, W), got {shape}")
    c, h, w = shape
    squeezes = _checks.integer(_OWNER, "squeezes", squeezes, minimum=0)
    steps = _checks.integer(_OWNER, "steps", steps, minimum=1)
    step = _checks.choice(_OWNER, "step", step, ("autoregressive", "coupling"))
    hidden = _checks.positive_int(_OWNER, "hidden", hidden)
    if h % 2**squeezes or w % 2**squeezes:
        raise ValueError(f"{_OWNER}: H and W must be divisible by 2**squeezes = {2**squeezes}, got "
                         f"shape {shape}")
    parts: list[Transform] = [Dequantize(levels)] if levels else []
    for _ in range(squeezes):
        parts += [Conv2d(c, 4 * c, 2, 2, image_size=(h, w)), RqSpline()]
        c, h, w = 4 * c, h // 2, w // 2
    d = c * h * w
    for _ in range(steps):
        layer = (MaskedAutoregressive(d, hidden=(hidden, hidden)) if step == "autoregressive"
                 else RqCoupling((d,), hidden=(hidden, hidden)))
        parts += [Conv2d(c, c, 1, 1, image_size=(h, w)), Flatten((c, h, w)), layer, Reshape((d,), (c, h, w))]
    return Flow(StandardNormal(c, h, w), Sequential(*parts))
