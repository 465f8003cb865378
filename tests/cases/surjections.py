"""Battery cases for SurVAE's surjections (Abs, Sort, StochasticPermutation, MaxPool2d).

None of them has a contribution that is a log-determinant (it is ``log p(dropped | z)``), so the
autograd log-det check does not apply (``log_det=False``); tests/surjections/ checks their
likelihoods by integration instead. Random Gaussian inputs have no ties and no zeros, where
every forward is smooth, so gradcheck applies.
"""

from __future__ import annotations

from survae_flowify.surjections import Abs
from tests.cases.base import Case

CASES: dict[str, Case] = {
    "abs_learned": Case(lambda: Abs(3, hidden=8), (3,), log_det=False),
    "abs_uniform": Case(lambda: Abs(sign_density="uniform"), (2, 3), log_det=False),
    "abs_image": Case(lambda: Abs((2, 3, 3), hidden=4), (2, 3, 3), log_det=False),
    "abs_context": Case(lambda: Abs(3, hidden=8, context_features=2), (3,), log_det=False,
                        context_features=2),
}
