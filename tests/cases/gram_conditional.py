"""Battery cases for the Gram layer's basis-free conditional null-space density."""

from __future__ import annotations

import survae_flowify as ffn
from tests.cases.base import Case

CASES: dict[str, Case] = {
    "linear_gram_reducing_conditional": Case(
        lambda: ffn.Linear(6, 2, parametrization="gram", inverse_density="conditional"), (6,),
        log_det=False),
    "linear_gram_reducing_conditional_context": Case(
        lambda: ffn.Linear(5, 3, parametrization="gram", inverse_density="conditional",
                           context_features=2), (5,), log_det=False, context_features=2),
    "linear_gram_conditional_stack": Case(
        lambda: ffn.Sequential(ffn.Linear(6, 4, parametrization="gram", inverse_density="conditional"),
                               ffn.RqSpline(),
                               ffn.Linear(4, 2, parametrization="gram", inverse_density="conditional")),
        (6,), log_det=False),
}
