"""Battery cases for the flowified Linear with ``parametrization="lu"`` (triangular ``T = L U``).

The increasing regime's noise directions are not orthogonal to the range of ``W``, so its
noise-free contribution ``Σ s`` is not ``½ log det JᵀJ`` of the embedding: the log-det check
does not apply there (the closed-form and importance-weighted checks do).
"""

from __future__ import annotations

import survae_flowify as ffn
from tests.cases.base import Case


def _lu(fin: int, fout: int, **kwargs: object) -> ffn.Linear:
    return ffn.Linear(fin, fout, parametrization="lu", **kwargs)  # type: ignore[arg-type]


CASES: dict[str, Case] = {
    "linear_lu_square": Case(lambda: _lu(4, 4), (4,), linear_gaussian=True),
    "linear_lu_square_no_bias": Case(lambda: _lu(3, 3, bias=False), (3,), linear_gaussian=True),
    "linear_lu_reducing_normal": Case(lambda: _lu(5, 2), (5,), linear_gaussian=True, log_det=False),
    "linear_lu_reducing_diagonal": Case(
        lambda: _lu(6, 3, inverse_density="diagonal"), (6,), linear_gaussian=True, log_det=False),
    "linear_lu_reducing_conditional": Case(
        lambda: _lu(6, 2, inverse_density="conditional"), (6,), log_det=False),
    "linear_lu_reducing_conditional_context": Case(
        lambda: _lu(5, 3, inverse_density="conditional", context_features=2), (5,),
        log_det=False, context_features=2),
    "linear_lu_increasing_normal": Case(
        lambda: _lu(2, 4), (2,), linear_gaussian=True, log_det=False),
    "linear_lu_increasing_uniform": Case(lambda: _lu(3, 5, noise="uniform"), (3,), log_det=False),
    "linear_lu_stack": Case(
        lambda: ffn.Sequential(_lu(3, 5), ffn.RqSpline(), _lu(5, 5), ffn.LeakyReLU(0.5),
                               _lu(5, 2, inverse_density="conditional")),
        (3,), log_det=False),
    "linear_lu_gaussian_stack": Case(
        lambda: ffn.Sequential(_lu(3, 5), _lu(5, 5), _lu(5, 2, inverse_density="diagonal")),
        (3,), linear_gaussian=True, log_det=False),
}
