"""Battery cases for the flowified convolution: Pad, Unfold, the patch kernel and Conv2d.

Images are tiny (1–2 channels, 4×4 to 6×6) so that the autograd-Jacobian checks stay fast.
Layers whose output has open spatial sizes end in a ``Flatten`` of the known size, so that the
closed-form oracle gets a fixed base shape.
"""

from __future__ import annotations

import survae_flowify as ffn
from survae_flowify.layers.pad import Pad
from survae_flowify.layers.unfold import Unfold
from tests.cases.base import Case


def _unfold(k: int, s: int, c: int, size: int, noise: str) -> ffn.Sequential:
    out = (size - k) // s + 1
    return ffn.Sequential(
        Unfold(k, s, noise=noise, in_channels=c), ffn.Flatten((c * k * k, out, out))
    )


CASES: dict[str, Case] = {
    "pad_normal": Case(lambda: Pad(3, 2, in_channels=1, image_size=(4, 5)), (1, 4, 5),
                       linear_gaussian=True),
    "pad_uniform": Case(lambda: Pad(2, 2, noise="uniform", in_channels=2, image_size=5), (2, 5, 5)),
    "pad_not_needed": Case(lambda: Pad(3, 2, in_channels=1, image_size=5), (1, 5, 5),
                           linear_gaussian=True),
    "pad_stride_1": Case(lambda: Pad(3, 1, in_channels=2), (2, 4, 4)),
    "unfold_3_2_normal": Case(lambda: _unfold(3, 2, 1, 5, "normal"), (1, 5, 5), linear_gaussian=True),
    "unfold_2_1_normal": Case(lambda: _unfold(2, 1, 1, 4, "normal"), (1, 4, 4), linear_gaussian=True),
    "unfold_2_2_normal": Case(lambda: _unfold(2, 2, 2, 4, "normal"), (2, 4, 4), linear_gaussian=True),
    "unfold_3_2_uniform": Case(lambda: Unfold(3, 2, noise="uniform", in_channels=2), (2, 5, 5)),
    "unfold_2_1_uniform": Case(lambda: Unfold(2, 1, noise="uniform", in_channels=1), (1, 4, 4)),
    "unfold_2_2_uniform": Case(lambda: Unfold(2, 2, noise="uniform", in_channels=1), (1, 4, 6)),
}
