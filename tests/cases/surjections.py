"""Battery cases for SurVAE's surjections (Abs, Sort, StochasticPermutation, MaxPool2d).

None of them has a contribution that is a log-determinant (it is ``log p(dropped | z)``), so the
autograd log-det check does not apply (``log_det=False``; StochasticPermutation's contribution,
0, is the log-det of the permutation it draws, so it does apply there); tests/surjections/ checks their
likelihoods by integration instead. Random Gaussian inputs have no ties and no zeros, where
every forward is smooth, so gradcheck applies.
"""

from __future__ import annotations

import survae_flowify as ffn
from survae_flowify.surjections import Abs, MaxPool2d, Sort, StochasticPermutation
from tests.cases.base import Case

CASES: dict[str, Case] = {
    "abs_learned": Case(lambda: Abs(3, hidden=8), (3,), log_det=False),
    "abs_uniform": Case(lambda: Abs(sign_density="uniform"), (2, 3), log_det=False),
    "abs_image": Case(lambda: Abs((2, 3, 3), hidden=4), (2, 3, 3), log_det=False),
    "abs_context": Case(lambda: Abs(3, hidden=8, context_features=2), (3,), log_det=False,
                        context_features=2),
    "sort": Case(Sort, (4,), log_det=False),
    "abs_then_sort": Case(lambda: ffn.Sequential(Abs(3, hidden=8), Sort()), (3,), log_det=False),
    "stochastic_permutation": Case(StochasticPermutation, (5,)),
    "maxpool_fixed": Case(lambda: MaxPool2d(2, inverse_density="fixed"), (2, 4, 4), log_det=False),
    "maxpool_learned_shared": Case(lambda: MaxPool2d(2), (2, 4, 6), log_det=False),
    "maxpool_learned_3x3": Case(lambda: MaxPool2d(3, channels=3), (3, 3, 6), log_det=False),
    "maxpool_conditional": Case(
        lambda: MaxPool2d(2, channels=2, inverse_density="conditional", hidden=4), (2, 4, 4),
        log_det=False,
    ),
    "maxpool_context": Case(
        lambda: MaxPool2d(2, channels=1, inverse_density="conditional", hidden=4, context_features=2),
        (1, 4, 4), log_det=False, context_features=2,
    ),
    "maxpool_then_abs": Case(
        lambda: ffn.Sequential(MaxPool2d(2, channels=1), Abs((1, 2, 2), hidden=4)), (1, 4, 4),
        log_det=False,
    ),
}
