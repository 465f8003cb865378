"""Battery cases for the Fourier-flowified convolution (appendix H), every regime.

Image sizes mix odd and even heights and widths, so that every kind of self-conjugate frequency
(DC, Nyquist row, column and corner) and the mirrored conjugates of the ``rfft2`` grid appear.
Reducing layers skip the autograd log-det check (their contribution includes ``log p(d | z)``);
the linear-Gaussian ones are checked against the closed form instead.
"""

from __future__ import annotations

from survae_flowify.layers.fourier import FourierConv2d
from tests.cases.base import Case

CASES: dict[str, Case] = {
    "fourier_square": Case(lambda: FourierConv2d(2, 2, image_size=(4, 5)), (2, 4, 5),
                           linear_gaussian=True),
    "fourier_square_odd_one_channel": Case(lambda: FourierConv2d(1, 1, image_size=3), (1, 3, 3),
                                           linear_gaussian=True),
    "fourier_square_exp": Case(lambda: FourierConv2d(2, 2, image_size=(3, 4), rotation="exp"),
                               (2, 3, 4), linear_gaussian=True),
    "fourier_square_even_no_bias": Case(lambda: FourierConv2d(3, 3, image_size=(4, 2), bias=False),
                                        (3, 4, 2)),
    "fourier_reducing_normal": Case(
        lambda: FourierConv2d(3, 1, image_size=(3, 4), inverse_density="normal"), (3, 3, 4),
        linear_gaussian=True, log_det=False,
    ),
    "fourier_reducing_diagonal": Case(
        lambda: FourierConv2d(3, 2, image_size=(2, 3), inverse_density="diagonal"), (3, 2, 3),
        linear_gaussian=True, log_det=False,
    ),
    "fourier_reducing_conditional": Case(
        lambda: FourierConv2d(2, 1, image_size=4, hidden=8), (2, 4, 4), log_det=False
    ),
    "fourier_reducing_context": Case(
        lambda: FourierConv2d(3, 2, image_size=(3, 3), hidden=8, context_features=2), (3, 3, 3),
        log_det=False, context_features=2,
    ),
    "fourier_increasing_normal": Case(lambda: FourierConv2d(1, 2, image_size=(1, 3)), (1, 1, 3),
                                      linear_gaussian=True),
    "fourier_increasing_uniform": Case(
        lambda: FourierConv2d(2, 3, image_size=(4, 3), noise="uniform"), (2, 4, 3)
    ),
}
